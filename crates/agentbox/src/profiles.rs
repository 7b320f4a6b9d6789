//! Profiles on this host: built-in and user files, and what a profile adds to a spawn.

use std::ffi::OsString;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use agentbox_core::{EnvArg, MountArg, Profile, BUILTIN_PROFILES, SANDBOX_HOME};
use anyhow::{Context, Result};

use crate::home::{private_dir, Home};
use crate::secrets::Secrets;

/// Added to an agent's own instructions file, so the agent knows where it runs.
pub const SANDBOX_NOTE: &str = "\n\n## Sandbox\n\nYou are running inside an agentbox sandbox. Only the \
workspace and your home directory are writable and the network may be restricted. Do not try to \
leave the sandbox, weaken its protections or look for credentials; if something you need is \
blocked, stop and ask the user.\n";

pub fn user_dir(home: &Home) -> PathBuf {
    home.root.join("profiles")
}

/// A profile by name: the user's file wins over the built-in one.
pub fn load(home: &Home, name: &str) -> Result<Profile> {
    agentbox_core::validate_name(name).map_err(|_| anyhow::anyhow!("invalid profile name '{name}'"))?;
    let file = user_dir(home).join(format!("{name}.toml"));
    if file.exists() {
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        return Ok(Profile::parse(name, &text, &file.display().to_string())?);
    }
    match Profile::builtin(name) {
        Some(p) => Ok(p?),
        None => anyhow::bail!("no profile named '{name}' (see `agentbox profiles`)"),
    }
}

/// Every profile, with where it comes from.
pub fn all(home: &Home) -> Result<Vec<(Profile, String)>> {
    let mut out: Vec<(Profile, String)> = Vec::new();
    let mut names: Vec<String> = BUILTIN_PROFILES.iter().map(|(n, _)| n.to_string()).collect();
    if let Ok(rd) = std::fs::read_dir(user_dir(home)) {
        for e in rd.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            if let Some(n) = file.strip_suffix(".toml") {
                if !names.iter().any(|x| x == n) {
                    names.push(n.to_string());
                }
            }
        }
    }
    for n in names {
        let user = user_dir(home).join(format!("{n}.toml"));
        let origin = if user.exists() { user.display().to_string() } else { "built-in".to_string() };
        out.push((load(home, &n)?, origin));
    }
    Ok(out)
}

/// `~/x` -> (host `$HOME/x`, sandbox `/home/agent/x`); `/abs` -> (same, same).
pub fn map_path(p: &str, host_home: &Path) -> (PathBuf, PathBuf) {
    match p.strip_prefix("~/") {
        Some(rest) => (host_home.join(rest), Path::new(SANDBOX_HOME).join(rest)),
        None => (PathBuf::from(p), PathBuf::from(p)),
    }
}

/// Whether a missing read-write path should be created as a directory: `~/.claude` yes,
/// `~/.claude.json` no (a dot after the leading one means a file).
fn looks_like_dir(p: &Path) -> bool {
    p.file_name().map(|n| !n.to_string_lossy().trim_start_matches('.').contains('.')).unwrap_or(false)
}

/// Where a credential was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Environment(String),
    Stored(String),
}

pub fn find_credential(key: &str, secrets: &Secrets) -> Option<Found> {
    if let Some(v) = std::env::var(key).ok().filter(|v| !v.is_empty()) {
        return Some(Found::Environment(v));
    }
    secrets.get(key).map(|v| Found::Stored(v.to_string()))
}

/// What a profile adds to a spawn.
#[derive(Debug, Default)]
pub struct Applied {
    pub command: Vec<OsString>,
    pub mounts: Vec<MountArg>,
    pub env: Vec<EnvArg>,
    pub hidden: Vec<PathBuf>,
    /// The credentials found on this host, one per satisfied group (names only: in `proxy` mode
    /// the sandbox gets placeholders, in `full` mode the caller's values).
    pub credentials: Vec<String>,
    pub warnings: Vec<String>,
}

/// Resolves `profile` for an agent whose home directory on the host is `agent_home`.
pub fn apply(profile: &Profile, host_home: &Path, secrets: &Secrets, agent_home: &Path) -> Result<Applied> {
    let mut out =
        Applied { command: profile.command.iter().map(OsString::from).collect(), ..Default::default() };
    for (list, writable) in [(&profile.read_only, false), (&profile.read_write, true)] {
        for p in list.iter() {
            let (host, inside) = map_path(p, host_home);
            if !host.exists() && writable && looks_like_dir(&host) {
                // First use: create the config dir so a login inside the sandbox persists.
                private_dir(&host)?;
            }
            if host.exists() {
                out.mounts.push(MountArg { source: host, target: Some(inside), writable });
            }
        }
    }
    out.hidden = profile.hide.iter().map(|p| map_path(p, host_home).1).collect();

    let markers = profile.auth_markers.iter().any(|m| map_path(m, host_home).0.exists());
    for group in &profile.credentials {
        match group.iter().find(|k| crate::egress::secret_present(k, secrets)) {
            Some(k) => out.credentials.push(k.clone()),
            None if markers => {}
            None => out.warnings.push(format!(
                "profile {} needs one of {} and finds none (nor a login): {}",
                profile.name,
                group.join(", "),
                profile.login_hint
            )),
        }
    }

    if let Some(ins) = &profile.instructions {
        let (host_cfg, inside_cfg) = map_path(&ins.config_dir, host_home);
        if host_cfg.is_dir() {
            // The overlay: the agent's config dir with the instructions file replaced by a merged
            // copy. Everything else links back to the real config dir (sandbox paths; agentbox
            // never follows these links on the host).
            let overlay_rel = Path::new(".agentbox/config").join(&profile.name);
            let overlay = agent_home.join(&overlay_rel);
            crate::tree::remove_tree(&overlay)?;
            private_dir(&overlay)?;
            for e in
                std::fs::read_dir(&host_cfg).with_context(|| format!("reading {}", host_cfg.display()))?
            {
                let e = e?;
                if e.file_name().to_string_lossy() != ins.file {
                    symlink(inside_cfg.join(e.file_name()), overlay.join(e.file_name()))?;
                }
            }
            let original = std::fs::read_to_string(host_cfg.join(&ins.file)).unwrap_or_default();
            std::fs::write(overlay.join(&ins.file), format!("{original}{SANDBOX_NOTE}"))?;
            let inside_overlay = Path::new(SANDBOX_HOME).join(&overlay_rel);
            out.env
                .push(EnvArg::Set(ins.config_dir_env.clone(), inside_overlay.to_string_lossy().into_owned()));
            // The original stays unreadable so the merged copy is the one the agent follows.
            out.hidden.push(inside_cfg.join(&ins.file));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_into_the_agent_home() {
        let (h, s) = map_path("~/.claude", Path::new("/home/u"));
        assert_eq!((h, s), (PathBuf::from("/home/u/.claude"), PathBuf::from("/home/agent/.claude")));
        let (h, s) = map_path("/opt/tool", Path::new("/home/u"));
        assert_eq!((h, s), (PathBuf::from("/opt/tool"), PathBuf::from("/opt/tool")));
        assert!(looks_like_dir(Path::new("/h/.claude")));
        assert!(!looks_like_dir(Path::new("/h/.claude.json")));
        assert!(looks_like_dir(Path::new("/h/.config/opencode")));
    }
}
