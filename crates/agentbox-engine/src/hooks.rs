//! User hooks: executables `AGENTBOX_HOME/hooks/pre-spawn` and `post-spawn`.
//!
//! They are the user's own programs and run on the host, with the agent's name and workspace as
//! arguments and in `AGENTBOX_NAME` / `AGENTBOX_WORKSPACE`. A failing `pre-spawn` stops the spawn
//! (nothing is left behind); `post-spawn` runs once the agent's command runs, and its failure is
//! reported but does not stop the agent. Hooks are never taken from an agent's workspace.

use std::path::Path;
use std::process::Command;

use crate::bail;
use crate::error::{Context, Result};

use crate::home::Home;

/// Runs hook `which` if it exists. Returns an error only when it exists and fails.
pub fn run(home: &Home, which: &str, name: &str, workspace: &Path) -> Result<()> {
    let hook = home.root.join("hooks").join(which);
    if !hook.exists() {
        return Ok(());
    }
    let status = Command::new(&hook)
        .arg(name)
        .arg(workspace)
        .env("AGENTBOX_NAME", name)
        .env("AGENTBOX_WORKSPACE", workspace)
        .env("AGENTBOX_HOME", &home.root)
        .status()
        .with_context(|| format!("running the {which} hook {}", hook.display()))?;
    if !status.success() {
        // The hook is the operator's policy: its refusal is not a fault.
        bail!(crate::Error::refused(format!("the {which} hook {} refused ({status})", hook.display())));
    }
    Ok(())
}
