//! Resource limits: cgroups where agentbox may write them, rlimits otherwise, refusal when neither
//! can enforce what was asked.
//!
//! | limit    | cgroup v1                   | cgroup v2        | fallback                                  |
//! |----------|-----------------------------|------------------|-------------------------------------------|
//! | --memory | memory.limit_in_bytes       | memory.max       | RLIMIT_DATA (per process, not the tree)   |
//! | --pids   | pids.max                    | pids.max         | RLIMIT_NPROC (counted per user namespace since Linux 5.14; never enforced for uid 0, so refused for root) |
//! | --cpus   | cpu.cfs_quota_us/period_us  | cpu.max          | none: refused                             |
//!
//! The cgroup is created before the sandbox starts. The child is cloned inside its v2 directory
//! when it has one (`CLONE_INTO_CGROUP`), and moved into the others (v1) by the launcher while it
//! waits: each move by a `cgroup.procs` write costs an RCU grace period (5 to 13 ms measured
//! here). The child then unshares its cgroup namespace so it sees the sandbox's cgroup as its
//! root. The directories are removed when the sandbox is gone.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use agentbox_core::Limits;
use nix::sys::resource::Resource;
use nix::unistd::Pid;

use crate::freeze::Freezer;
use crate::JailError;

const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    Memory,
    Pids,
    Cpu,
}

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Pids => "pids",
            Self::Cpu => "cpu",
        }
    }
}

/// A cgroup mount seen in /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub mount_point: PathBuf,
    /// The mount's root within the hierarchy (usually `/`).
    pub root: PathBuf,
    /// v1 controllers on this hierarchy; empty for v2.
    pub controllers: Vec<String>,
    pub v2: bool,
}

/// Parses the cgroup mounts out of /proc/self/mountinfo text.
pub fn parse_cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let (root, mount_point) = (unescape(pre[3]), unescape(pre[4]));
        match post[0] {
            "cgroup2" => out.push(CgroupMount { mount_point, root, controllers: vec![], v2: true }),
            "cgroup" => {
                let controllers = post[2]
                    .split(',')
                    .filter(|o| {
                        ["memory", "pids", "cpu", "cpuacct", "cpuset", "blkio", "devices", "freezer"]
                            .contains(o)
                    })
                    .map(String::from)
                    .collect();
                out.push(CgroupMount { mount_point, root, controllers, v2: false });
            }
            _ => {}
        }
    }
    out
}

fn unescape(s: &str) -> PathBuf {
    PathBuf::from(
        s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\"),
    )
}

/// Parses /proc/self/cgroup: `(hierarchy controllers, path)`; v2 has an empty controller list.
pub fn parse_proc_cgroup(text: &str) -> Vec<(Vec<String>, PathBuf)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            let ctrls = it.next()?;
            let path = it.next()?;
            let ctrls = if ctrls.is_empty() { vec![] } else { ctrls.split(',').map(String::from).collect() };
            Some((ctrls, PathBuf::from(path)))
        })
        .collect()
}

/// A cgroup agentbox made for a sandbox (`agentbox-*`), in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SandboxCgroup {
    pub(crate) dir: PathBuf,
    /// The hierarchy's v1 controllers; empty for v2.
    pub(crate) controllers: Vec<String>,
    pub(crate) v2: bool,
}

/// The cgroups agentbox made that process `pid` is in, one per hierarchy (several v1
/// controllers may share one directory).
pub(crate) fn sandbox_cgroups(pid: Pid) -> Vec<SandboxCgroup> {
    let mounts = parse_cgroup_mounts(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
    let theirs = parse_proc_cgroup(&fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default());
    let mut out = Vec::new();
    for (ctrls, path) in theirs {
        if !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("agentbox-")) {
            continue;
        }
        let mount = mounts.iter().find(|m| match ctrls.is_empty() {
            true => m.v2,
            false => !m.v2 && ctrls.iter().all(|c| m.controllers.contains(c)),
        });
        if let Some(m) = mount {
            if let Ok(rel) = path.strip_prefix(&m.root) {
                out.push(SandboxCgroup {
                    dir: m.mount_point.join(rel),
                    controllers: m.controllers.clone(),
                    v2: m.v2,
                });
            }
        }
    }
    out
}

/// The caller's cgroup directory for a controller (v1) or the unified hierarchy (`None`).
fn own_dir(
    mounts: &[CgroupMount],
    proc_cgroup: &[(Vec<String>, PathBuf)],
    ctrl: Option<&str>,
) -> Option<PathBuf> {
    let mount = mounts.iter().find(|m| match ctrl {
        Some(c) => !m.v2 && m.controllers.iter().any(|x| x == c),
        None => m.v2,
    })?;
    let (_, path) = proc_cgroup.iter().find(|(cs, _)| match ctrl {
        Some(c) => cs.iter().any(|x| x == c),
        None => cs.is_empty(),
    })?;
    let rel = path.strip_prefix(&mount.root).ok()?;
    Some(mount.mount_point.join(rel))
}

/// How each requested limit is enforced.
#[derive(Debug, Default)]
pub struct Enforcement {
    pub cgroup: Option<Cgroup>,
    pub rlimits: Vec<(Resource, u64)>,
    /// One line per limit: `memory: cgroup v1 /sys/fs/cgroup/memory/...`.
    pub notes: Vec<String>,
}

/// A cgroup agentbox created for one sandbox: one directory per v1 controller, or one v2 directory,
/// for its limits; and its freezer (for `pause`), where one could be made.
#[derive(Debug)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
    freezer: Option<Freezer>,
}

impl Cgroup {
    /// Its directory in the v2 hierarchy, if it has one (the limits' or the freezer's), open for
    /// starting the sandbox in it ([`agentbox_sys::clone_process_into`]).
    pub fn v2_entry(&self) -> Option<OwnedFd> {
        let dir = v2_dir_of(&self.dirs, self.freezer.as_ref())?;
        fs::File::open(dir).ok().map(OwnedFd::from)
    }

    /// Moves `pid` into the cgroup (every directory of it), except its v2 directory when the
    /// process was started there (`entered_v2`). The limits' directories must take it; the
    /// freezer is a convenience (`pause` stops the processes by signals without it).
    pub fn add(&mut self, pid: Pid, entered_v2: bool) -> Result<(), JailError> {
        let entered = if entered_v2 { v2_dir_of(&self.dirs, self.freezer.as_ref()) } else { None };
        for d in self.dirs.iter().filter(|d| Some(d.as_path()) != entered.as_deref()) {
            fs::write(d.join("cgroup.procs"), pid.to_string()).map_err(|e| {
                JailError::Limits(format!("cannot move the sandbox into {}: {e}", d.display()))
            })?;
        }
        if let Some(fr) = &self.freezer {
            if !self.dirs.contains(&fr.dir)
                && Some(fr.dir.as_path()) != entered.as_deref()
                && fs::write(fr.dir.join("cgroup.procs"), pid.to_string()).is_err()
            {
                let _ = fs::remove_dir(&fr.dir);
                self.freezer = None;
            }
        }
        Ok(())
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // A frozen cgroup's processes cannot finish dying; none is left frozen.
        let mut all = self.dirs.clone();
        if let Some(fr) = &self.freezer {
            let _ = fr.set(false);
            if !all.contains(&fr.dir) {
                all.push(fr.dir.clone());
            }
        }
        for d in all.iter().rev() {
            // The sandbox's processes are gone once its init is reaped, but the kernel may take a
            // moment to release the cgroup.
            for _ in 0..100 {
                match fs::remove_dir(d) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(5))
                    }
                    _ => break,
                }
            }
        }
    }
}

/// The v2 directory among a sandbox's cgroup directories: the freezer's if it is a v2 one, else
/// one of the limits' that is in the v2 hierarchy (v2 puts every controller in one directory).
fn v2_dir_of(dirs: &[PathBuf], freezer: Option<&Freezer>) -> Option<PathBuf> {
    if let Some(fr) = freezer.filter(|f| f.v2) {
        return Some(fr.dir.clone());
    }
    dirs.iter().find(|d| d.join("cgroup.controllers").exists()).cloned()
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), JailError> {
    fs::write(dir.join(file), value)
        .map_err(|e| JailError::Limits(format!("cannot set {} in {}: {e}", file, dir.display())))
}

fn create_dir(parent: &Path, name: &str) -> io::Result<PathBuf> {
    let dir = parent.join(name);
    fs::create_dir(&dir)?;
    Ok(dir)
}

/// Removes the cgroups a sandbox's maker (`maker`, the process that started it: its supervisor)
/// left behind when it died without removing them (killed with SIGKILL): `agentbox-MAKER-...`
/// in every hierarchy agentbox makes them in. Called by whoever finds that maker dead; a cgroup
/// still in use cannot be removed (EBUSY) and is left.
pub fn remove_leftover_cgroups(maker: u32) {
    let mounts = parse_cgroup_mounts(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
    let own = parse_proc_cgroup(&fs::read_to_string("/proc/self/cgroup").unwrap_or_default());
    let prefix = format!("agentbox-{maker}-");
    let parents: Vec<PathBuf> = [Some("freezer"), Some("memory"), Some("pids"), Some("cpu"), None]
        .into_iter()
        .filter_map(|c| own_dir(&mounts, &own, c))
        .collect();
    for parent in parents {
        for entry in fs::read_dir(&parent).into_iter().flatten().flatten() {
            if !entry.file_name().to_string_lossy().starts_with(&prefix) {
                continue;
            }
            // A frozen group's processes could not finish dying.
            let _ = fs::write(entry.path().join("freezer.state"), "THAWED");
            let _ = fs::write(entry.path().join("cgroup.freeze"), "0");
            let _ = fs::remove_dir(entry.path());
        }
    }
}

/// Decides how to enforce `limits`, creating the cgroup if one is needed, and, for a sandbox
/// that can be paused (an agent's), makes its freezer cgroup where agentbox may (named `id` too).
/// A foreground sandbox (`run`, a sandboxed git) has nobody to pause it and pays for no cgroup
/// it does not need: making and removing one is most of what `run` costs beyond bubblewrap.
pub fn enforce(limits: &Limits, id: &str, pausable: bool) -> Result<Enforcement, JailError> {
    if limits.is_empty() && !pausable {
        return Ok(Enforcement::default());
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let proc_cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mounts = parse_cgroup_mounts(&mountinfo);
    let own = parse_proc_cgroup(&proc_cgroup);
    let (mut out, dirs) = enforce_limits(limits, id, &mounts, &own)?;
    let freezer = if pausable { make_freezer(&mounts, &own, id, &dirs) } else { None };
    if !dirs.is_empty() || freezer.is_some() {
        out.cgroup = Some(Cgroup { dirs, freezer });
    }
    Ok(out)
}

/// The sandbox's freezer: its v2 cgroup (the limits' one if they made it), or else a directory in
/// the v1 freezer hierarchy. `None` where the caller may not create one.
///
/// v2 first, on a machine with both (the "hybrid" layout): a v2 directory needs no controller
/// (`cgroup.freeze` is core), and a sandbox can be started inside it, which saves moving it
/// there ([`Cgroup::v2_entry`]).
fn make_freezer(
    mounts: &[CgroupMount],
    own: &[(Vec<String>, PathBuf)],
    id: &str,
    dirs: &[PathBuf],
) -> Option<Freezer> {
    if let Some(parent) = own_dir(mounts, own, None) {
        let dir = parent.join(id);
        let made = !dirs.contains(&dir) && create_dir(&parent, id).is_ok();
        if made || dirs.contains(&dir) {
            if dir.join("cgroup.freeze").exists() {
                return Some(Freezer { dir, v2: true });
            }
            if made {
                let _ = fs::remove_dir(&dir);
            }
        }
    }
    let parent = own_dir(mounts, own, Some("freezer"))?;
    create_dir(&parent, id).ok().map(|dir| Freezer { dir, v2: false })
}

/// The limits' part of [`enforce`]: how each is enforced, and the cgroup directories made.
fn enforce_limits(
    limits: &Limits,
    id: &str,
    mounts: &[CgroupMount],
    own: &[(Vec<String>, PathBuf)],
) -> Result<(Enforcement, Vec<PathBuf>), JailError> {
    let mut out = Enforcement::default();
    if limits.is_empty() {
        return Ok((out, vec![]));
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut failures: Vec<String> = Vec::new();

    let wanted: Vec<Controller> = [
        limits.memory.map(|_| Controller::Memory),
        limits.pids.map(|_| Controller::Pids),
        limits.cpus.map(|_| Controller::Cpu),
    ]
    .into_iter()
    .flatten()
    .collect();

    // cgroup v2: one directory for all controllers, if the controllers are delegated to us.
    let mut v2_dir: Option<PathBuf> = None;
    let v2_missing: Vec<Controller> = wanted
        .iter()
        .copied()
        .filter(|c| !mounts.iter().any(|m| !m.v2 && m.controllers.iter().any(|x| x == c.name())))
        .collect();
    if !v2_missing.is_empty() {
        if let Some(parent) = own_dir(mounts, own, None) {
            let available = fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
            if v2_missing.iter().all(|c| available.split_whitespace().any(|x| x == c.name())) {
                let enable: Vec<String> = v2_missing.iter().map(|c| format!("+{}", c.name())).collect();
                match fs::write(parent.join("cgroup.subtree_control"), enable.join(" "))
                    .and_then(|_| create_dir(&parent, id))
                {
                    Ok(d) => v2_dir = Some(d),
                    Err(e) => failures.push(format!("cgroup v2 at {}: {e}", parent.display())),
                }
            }
        }
    }

    let mut cgroup_for = |ctrl: Controller, dirs: &mut Vec<PathBuf>| -> Option<(PathBuf, bool)> {
        if let Some(parent) = own_dir(mounts, own, Some(ctrl.name())) {
            // Several v1 controllers can share one hierarchy (cpu,cpuacct): reuse its directory.
            let target = parent.join(id);
            if dirs.contains(&target) {
                return Some((target, false));
            }
            return match create_dir(&parent, id) {
                Ok(_) => {
                    dirs.push(target.clone());
                    Some((target, false))
                }
                Err(e) => {
                    failures.push(format!("cgroup v1 {} at {}: {e}", ctrl.name(), parent.display()));
                    None
                }
            };
        }
        v2_dir.clone().map(|d| {
            if !dirs.contains(&d) {
                dirs.push(d.clone());
            }
            (d, true)
        })
    };

    let root = nix::unistd::geteuid().is_root();
    if let Some(mem) = limits.memory {
        if let Some((dir, v2)) = cgroup_for(Controller::Memory, &mut dirs) {
            if v2 {
                write(&dir, "memory.max", &mem.to_string())?;
                if dir.join("memory.swap.max").exists() {
                    write(&dir, "memory.swap.max", "0")?;
                }
            } else {
                write(&dir, "memory.limit_in_bytes", &mem.to_string())?;
                if dir.join("memory.memsw.limit_in_bytes").exists() {
                    write(&dir, "memory.memsw.limit_in_bytes", &mem.to_string())?;
                }
            }
            out.notes.push(format!("memory: cgroup {}", dir.display()));
        } else {
            out.rlimits.push((Resource::RLIMIT_DATA, mem));
            out.notes.push("memory: RLIMIT_DATA (per process; no writable memory cgroup)".into());
        }
    }
    if let Some(pids) = limits.pids {
        if let Some((dir, _)) = cgroup_for(Controller::Pids, &mut dirs) {
            write(&dir, "pids.max", &pids.to_string())?;
            out.notes.push(format!("pids: cgroup {}", dir.display()));
        } else if root {
            cleanup(&dirs);
            return Err(JailError::Limits(format!(
                "cannot enforce --pids: no writable pids cgroup ({}), and the process-count rlimit does not apply to root",
                failures.join("; ")
            )));
        } else {
            out.rlimits.push((Resource::RLIMIT_NPROC, pids));
            out.notes.push("pids: RLIMIT_NPROC (counted in the sandbox's user namespace)".into());
        }
    }
    if let Some(cpus) = limits.cpus {
        if let Some((dir, v2)) = cgroup_for(Controller::Cpu, &mut dirs) {
            let quota = ((cpus * CPU_PERIOD_US as f64).round() as u64).max(1000);
            if v2 {
                write(&dir, "cpu.max", &format!("{quota} {CPU_PERIOD_US}"))?;
            } else {
                write(&dir, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                write(&dir, "cpu.cfs_quota_us", &quota.to_string())?;
            }
            out.notes.push(format!("cpus: cgroup {}", dir.display()));
        } else {
            cleanup(&dirs);
            let why = if failures.is_empty() {
                "no cpu cgroup controller is mounted".to_string()
            } else {
                failures.join("; ")
            };
            return Err(JailError::Limits(format!(
                "cannot enforce --cpus: it needs a writable cpu cgroup ({why}). Run as root, or inside a delegated \
                 cgroup (systemd-run --user --scope -p Delegate=yes agentbox ...), or drop --cpus"
            )));
        }
    }
    Ok((out, dirs))
}

fn cleanup(dirs: &[PathBuf]) {
    for d in dirs.iter().rev() {
        let _ = fs::remove_dir(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
33 30 0:29 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
34 30 0:30 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct";

    #[test]
    fn parses_hybrid_layout() {
        let m = parse_cgroup_mounts(HYBRID);
        assert_eq!(m.len(), 5);
        assert!(m.iter().any(|x| x.v2 && x.mount_point == Path::new("/sys/fs/cgroup/unified")));
        let own = parse_proc_cgroup("4:memory:/user/1\n3:pids:/\n0::/init.scope\n");
        assert_eq!(own_dir(&m, &own, Some("memory")), Some(PathBuf::from("/sys/fs/cgroup/memory/user/1")));
        assert_eq!(own_dir(&m, &own, Some("pids")), Some(PathBuf::from("/sys/fs/cgroup/pids/")));
        assert_eq!(own_dir(&m, &own, None), Some(PathBuf::from("/sys/fs/cgroup/unified/init.scope")));
        assert_eq!(own_dir(&m, &own, Some("cpu")), None);
    }

    #[test]
    fn parses_pure_v2() {
        let m = parse_cgroup_mounts("26 1 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate");
        let own = parse_proc_cgroup("0::/user.slice/user-1000.slice/session-2.scope\n");
        assert_eq!(
            own_dir(&m, &own, None),
            Some(PathBuf::from("/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope"))
        );
    }

    #[test]
    fn no_limits_no_limit_cgroup() {
        // Only a freezer, where this user may make one.
        let e = enforce(&Limits::default(), &format!("agentbox-test-{}", std::process::id()), true).unwrap();
        assert!(
            e.cgroup.as_ref().is_none_or(|c| c.dirs.is_empty()) && e.rlimits.is_empty() && e.notes.is_empty()
        );
        // Nothing at all for a sandbox nobody can pause.
        let e = enforce(&Limits::default(), &format!("agentbox-test-{}", std::process::id()), false).unwrap();
        assert!(e.cgroup.is_none() && e.rlimits.is_empty() && e.notes.is_empty());
    }
}
