use std::path::{Component, Path, PathBuf};

use crate::SpecError;

/// Host directories that every sandbox sees read-only (when they exist). `/bin`, `/lib` and friends
/// are symlinks into `/usr` on merged-usr systems; the plan recreates them as symlinks.
pub const SYSTEM_DIRS: &[&str] =
    &["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/nix"];

/// Directories the sandbox builds itself; nothing may be mounted over them or inside them.
const SANDBOX_OWNED: &[&str] = &["/proc", "/dev", "/sys"];

/// Shared scratch directories: other programs keep their sockets there (tmux, ssh-agent, X11).
const SHARED_TMP: &[&str] = &["/tmp", "/var/tmp", "/dev/shm", "/run"];

/// Lexically normalizes an absolute path: drops `.` and repeated `/`, refuses `..`.
pub fn normalize_absolute(path: &Path) -> Result<PathBuf, SpecError> {
    if !path.is_absolute() {
        return Err(SpecError::NotAbsolute { path: path.to_path_buf() });
    }
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(SpecError::MountTarget {
                    path: path.to_path_buf(),
                    reason: "'..' is not allowed",
                })
            }
        }
    }
    Ok(out)
}

fn is_within(path: &Path, dir: &str) -> bool {
    path.starts_with(dir)
}

/// Why a writable host directory must not be handed to an agent, if it must not.
fn writable_refusal(path: &Path, home: Option<&Path>) -> Option<&'static str> {
    if path == Path::new("/") {
        return Some("it is the root directory");
    }
    if let Some(home) = home {
        if path == home {
            return Some("it is your home directory (your keys and tokens live there)");
        }
        if home.starts_with(path) {
            return Some("it contains your home directory");
        }
    }
    if SYSTEM_DIRS.iter().any(|d| is_within(path, d) || Path::new(d).starts_with(path)) {
        return Some("it is or contains a system directory");
    }
    if SANDBOX_OWNED.iter().any(|d| is_within(path, d)) {
        return Some("it is a kernel or device file system");
    }
    if SHARED_TMP.iter().any(|d| path == Path::new(d) || Path::new(d).starts_with(path)) {
        return Some("it is a shared temporary directory (other programs keep sockets there)");
    }
    None
}

/// Checks a canonical workspace path against the caller's home directory.
pub fn check_workspace(path: &Path, home: Option<&Path>) -> Result<(), SpecError> {
    match writable_refusal(path, home) {
        Some(reason) => Err(SpecError::Workspace { path: path.to_path_buf(), reason }),
        None => Ok(()),
    }
}

/// Checks a `--mount`: the target must be a place the sandbox does not build itself, and a writable
/// source must pass the same refusals as a workspace.
pub fn check_mount_target(
    source: &Path,
    target: &Path,
    writable: bool,
    home: Option<&Path>,
) -> Result<(), SpecError> {
    if target == Path::new("/") {
        return Err(SpecError::MountTarget {
            path: target.into(),
            reason: "it would replace the whole root",
        });
    }
    if SANDBOX_OWNED.iter().any(|d| is_within(target, d)) {
        return Err(SpecError::MountTarget {
            path: target.into(),
            reason: "agentbox builds /proc, /dev and /sys itself",
        });
    }
    if writable {
        if let Some(reason) = writable_refusal(source, home) {
            return Err(SpecError::MountSource { path: source.into(), reason });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: &str = "/home/alice";

    fn ws(p: &str) -> Result<(), SpecError> {
        check_workspace(Path::new(p), Some(Path::new(HOME)))
    }

    #[test]
    fn refuses_dangerous_workspaces() {
        for bad in
            ["/", "/home", "/home/alice", "/usr", "/usr/lib", "/etc", "/proc/1", "/dev", "/tmp", "/run"]
        {
            assert!(ws(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn accepts_projects() {
        for good in ["/home/alice/src/app", "/tmp/work", "/srv/project", "/home/bob", "/var/tmp/x"] {
            assert!(ws(good).is_ok(), "{good} must be accepted");
        }
    }

    #[test]
    fn mount_targets() {
        let src = Path::new("/data/x");
        let home = Some(Path::new(HOME));
        assert!(check_mount_target(src, Path::new("/mnt/x"), true, home).is_ok());
        assert!(check_mount_target(src, Path::new("/"), false, home).is_err());
        assert!(check_mount_target(src, Path::new("/proc/x"), false, home).is_err());
        assert!(check_mount_target(Path::new("/home"), Path::new("/h"), true, home).is_err());
        assert!(check_mount_target(Path::new("/home"), Path::new("/h"), false, home).is_ok());
    }

    #[test]
    fn normalize() {
        assert_eq!(normalize_absolute(Path::new("/a//b/./c")).unwrap(), PathBuf::from("/a/b/c"));
        assert!(normalize_absolute(Path::new("/a/../b")).is_err());
        assert!(normalize_absolute(Path::new("a/b")).is_err());
    }
}
