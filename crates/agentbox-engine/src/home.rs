//! AGENTBOX_HOME: where agentbox keeps its state.
//!
//! ```text
//! $AGENTBOX_HOME (default $XDG_DATA_HOME/agentbox or ~/.local/share/agentbox), mode 0700
//!   state.db                 SQLite, WAL
//!   agents/<name>/           mode 0700
//!     workspace/  home/      bound into the sandbox (the only parts it sees)
//!     log  sock  screen.txt  screen.ansi  supervisor.log
//! ```

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Context, Result};

#[derive(Debug, Clone)]
pub struct Home {
    pub root: PathBuf,
}

impl Home {
    /// Resolves and creates (owner-only) the state directory.
    pub fn open() -> Result<Self> {
        let root = match std::env::var_os("AGENTBOX_HOME") {
            Some(h) if !h.is_empty() => PathBuf::from(h),
            _ => match std::env::var_os("XDG_DATA_HOME") {
                Some(x) if !x.is_empty() => PathBuf::from(x).join("agentbox"),
                _ => {
                    PathBuf::from(std::env::var_os("HOME").context("neither AGENTBOX_HOME nor HOME is set")?)
                        .join(".local/share/agentbox")
                }
            },
        };
        Self::at(root)
    }

    /// The state directory at `root`, created (owner-only) if needed.
    pub fn at(root: PathBuf) -> Result<Self> {
        if !root.is_absolute() {
            return Err(crate::Error::invalid(format!(
                "AGENTBOX_HOME must be an absolute path, not {}",
                root.display()
            )));
        }
        private_dir(&root)?;
        private_dir(&root.join("agents"))?;
        Ok(Self { root })
    }

    /// Per-home VM files: the initramfs built for this binary and the accelerator probe's answer.
    pub fn vm_work_dir(&self) -> PathBuf {
        self.root.join("vm")
    }

    pub fn store_path(&self) -> PathBuf {
        self.root.join("state.db")
    }

    pub fn agent_dir(&self, name: &str) -> PathBuf {
        self.root.join("agents").join(name)
    }

    pub fn store(&self) -> Result<agentbox_store::Store> {
        let path = self.store_path();
        // An empty file where the store was, beside agents' directories: opening it would make
        // a new, empty store and hide every agent. Refused with the way out. The store is in WAL
        // mode, so a new one's content can be all in `state.db-wal` while `state.db` is still
        // empty: both must be empty. The directories are counted first (an agent's row is
        // committed before its directory is made), and a refusal is looked at again a few times,
        // so that another process creating or removing the first agent is never taken for a lost
        // store. A store with content, the usual case, is seen from two stats, without listing
        // the agents (every command opens the store; there may be thousands of them).
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let empty = || {
            let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
            std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) && len(Path::new(&wal)) == 0
        };
        let lost = || -> usize {
            if !empty() {
                return 0;
            }
            let agents = std::fs::read_dir(self.root.join("agents")).map(|d| d.count()).unwrap_or(0);
            if empty() {
                agents
            } else {
                0
            }
        };
        for attempt in 0..5 {
            let agents = lost();
            if agents == 0 {
                break;
            }
            if attempt == 4 {
                return Err(crate::Error::conflict(format!(
                    "{} is empty, but {agents} agent directories are in {}: `agentbox store recover` \
                     rebuilds the store from them",
                    path.display(),
                    self.root.join("agents").display()
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        agentbox_store::Store::open(&path).with_context(|| format!("opening {}", path.display()))
    }
}

/// Creates `dir` (and parents) with mode 0700 and tightens an existing one. On a read-only file
/// system an existing directory is taken as it is (reading it is all that can happen there).
/// Replaces the file at `path` with what `fill` writes: a new file (owner-only from the start),
/// synced, then renamed over the old one, so a reader sees the old file or the new, whole.
pub fn replace_private_file(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    fill(&mut f).with_context(|| format!("writing {}", tmp.display()))?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

pub fn private_dir(dir: &Path) -> Result<()> {
    let read_only = |e: &std::io::Error| e.raw_os_error() == Some(nix::libc::EROFS) && dir.is_dir();
    match std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Err(e) if !read_only(&e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        _ => {}
    }
    match std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
        Err(e) if !read_only(&e) => Err(e).with_context(|| format!("securing {}", dir.display())),
        _ => Ok(()),
    }
}

/// The guest image written by `agentbox vm setup`: `$AGENTBOX_CACHE_DIR/vm` (default
/// `$XDG_CACHE_HOME/agentbox/vm` or `~/.cache/agentbox/vm`). A cache: it can be fetched again.
pub fn vm_image_dir() -> Result<PathBuf> {
    let base = match (std::env::var_os("AGENTBOX_CACHE_DIR"), std::env::var_os("XDG_CACHE_HOME")) {
        (Some(c), _) if !c.is_empty() => PathBuf::from(c),
        (_, Some(x)) if !x.is_empty() => PathBuf::from(x).join("agentbox"),
        _ => PathBuf::from(std::env::var_os("HOME").context("neither AGENTBOX_CACHE_DIR nor HOME is set")?)
            .join(".cache/agentbox"),
    };
    crate::ensure!(base.is_absolute(), "AGENTBOX_CACHE_DIR must be an absolute path, not {}", base.display());
    Ok(base.join("vm"))
}

/// A command that runs this very agentbox binary again, in another role.
///
/// It execs `/proc/self/exe`, not the path the binary was started from: a long-running process
/// (the server) keeps working when its file is replaced by an upgrade, and every agent it
/// starts runs the same code as itself. `argv[0]` stays the binary's path for `ps`.
pub fn self_command() -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut c = std::process::Command::new("/proc/self/exe");
    if let Ok(path) = std::env::current_exe() {
        let shown = path.to_string_lossy().trim_end_matches(" (deleted)").to_string();
        c.arg0(shown);
    }
    c
}
