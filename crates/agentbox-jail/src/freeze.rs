//! Freezing a running sandbox: every process stopped, memory kept; and thawing it again.
//!
//! Two ways, the first that this sandbox has:
//! 1. **Its freezer cgroup** (v1 `freezer.state`, v2 `cgroup.freeze`), which [`crate::start`]
//!    creates with the sandbox wherever agentbox may write one (root, or a delegated v2 cgroup).
//!    One write freezes the whole group at once: processes forked meanwhile, and the commands
//!    `exec` started (they join the sandbox's cgroups), are frozen with it.
//! 2. **SIGSTOP to each process**, where no freezer cgroup could be made (an unprivileged user
//!    without delegation). The sandbox's processes are its init's descendants (orphans are
//!    re-parented to the init of its PID namespace, so none leaves the tree) and whatever else
//!    is in its PID namespace (found by the namespace's inode). Each is signalled through a
//!    process descriptor opened and then checked against the start time read together with the
//!    parent that placed it in the tree, so a pid reused by a process outside the sandbox is
//!    never signalled. A process forked while the tree is being stopped shows up in the next
//!    scan; the freeze is done when a scan finds every process stopped. A thaw continues every
//!    process of the sandbox.
//!
//! A freezer that does not settle within 1.5 s (a task stuck where the kernel cannot freeze it)
//! is thawed and the signals are used instead; a thaw continues by signals whatever is stopped.
//!
//! Either way, stopped processes use no CPU and keep their memory; their terminal output waits in
//! the PTY.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentbox_sys::PidFd;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::limits::sandbox_cgroups;
use crate::JailError;

/// How long a freeze waits for every process to stop before it gives up (and thaws what it
/// stopped).
const SETTLE: Duration = Duration::from_secs(3);

/// A running sandbox, as the host sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxTree {
    /// Its init (pid 1 inside).
    pub root: Pid,
    /// Its PID namespace's inode, when known: it also holds the commands `exec` started (whose
    /// parent is the joining helper, outside the tree).
    pub pid_ns: Option<u64>,
}

/// How a sandbox was frozen or thawed, and how many processes that touched (for the journal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Froze {
    pub processes: usize,
    /// `true`: through the sandbox's freezer cgroup; `false`: by signals.
    pub cgroup: bool,
}

impl std::fmt::Display for Froze {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.cgroup {
            true => write!(f, "{} processes, freezer cgroup", self.processes),
            false => write!(f, "{} processes, SIGSTOP/SIGCONT", self.processes),
        }
    }
}

fn failed(msg: impl Into<String>) -> JailError {
    JailError::Freeze(msg.into())
}

/// Freezes every process of the sandbox. On failure nothing stays frozen.
pub fn freeze(tree: SandboxTree) -> Result<Froze, JailError> {
    let by_signals = || stop_tree(tree).map(|processes| Froze { processes, cgroup: false });
    match Freezer::of(tree.root) {
        // A freezer that does not settle (a task stuck where the kernel cannot freeze it) is
        // let go, and the processes are stopped by signals instead.
        Some(fr) => fr.freeze().or_else(|_| by_signals()),
        None => by_signals(),
    }
}

/// Thaws every process of the sandbox.
pub fn thaw(tree: SandboxTree) -> Result<Froze, JailError> {
    match Freezer::of(tree.root) {
        Some(fr) => {
            fr.set(false).map_err(|e| failed(format!("thawing {}: {e}", fr.dir.display())))?;
            let pids = fr.pids();
            // Stopped by signals when the freezer did not settle: continued the same way.
            if pids.iter().any(|pid| stat(*pid).is_some_and(|s| matches!(s.state, 'T' | 't'))) {
                continue_tree(tree)?;
            }
            Ok(Froze { processes: pids.len(), cgroup: true })
        }
        None => continue_tree(tree).map(|processes| Froze { processes, cgroup: false }),
    }
}

/// Thaws the sandbox's freezer cgroup, if it has one, so that a SIGKILL just sent can take
/// effect: a process frozen by a v1 freezer does not die until it is thawed, and the end of a
/// PID namespace waits for every process in it. (Stopped processes die of SIGKILL as they are.)
pub fn thaw_for_kill(root: Pid) {
    if let Some(fr) = Freezer::of(root) {
        let _ = fr.set(false);
    }
}

/// How long a freezer is given to settle before the processes are stopped by signals instead.
const FREEZER_SETTLE: Duration = Duration::from_millis(1500);

/// A sandbox's freezer cgroup directory (agentbox made it: its name starts `agentbox-`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Freezer {
    pub(crate) dir: PathBuf,
    pub(crate) v2: bool,
}

impl Freezer {
    /// The freezer cgroup `pid` is in, if agentbox created it for a sandbox.
    fn of(pid: Pid) -> Option<Self> {
        let cgroups = sandbox_cgroups(pid);
        // `limits::enforce` makes a sandbox's freezer in one of the two (v2 first); a sandbox
        // started by an older build has it in the v1 hierarchy.
        let v1 = cgroups.iter().find(|c| !c.v2 && c.controllers.iter().any(|x| x == "freezer"));
        let v2 = cgroups.iter().find(|c| c.v2);
        v1.into_iter().chain(v2).find_map(|c| {
            let file = if c.v2 { "cgroup.freeze" } else { "freezer.state" };
            c.dir.join(file).exists().then(|| Self { dir: c.dir.clone(), v2: c.v2 })
        })
    }

    pub(crate) fn set(&self, frozen: bool) -> std::io::Result<()> {
        let (file, value) = match (self.v2, frozen) {
            (false, true) => ("freezer.state", "FROZEN"),
            (false, false) => ("freezer.state", "THAWED"),
            (true, true) => ("cgroup.freeze", "1"),
            (true, false) => ("cgroup.freeze", "0"),
        };
        std::fs::write(self.dir.join(file), value)
    }

    fn settled(&self) -> bool {
        match self.v2 {
            false => read(&self.dir.join("freezer.state")).trim() == "FROZEN",
            true => read(&self.dir.join("cgroup.events")).lines().any(|l| l.trim() == "frozen 1"),
        }
    }

    /// The group's processes.
    fn pids(&self) -> Vec<i32> {
        read(&self.dir.join("cgroup.procs")).lines().filter_map(|p| p.trim().parse().ok()).collect()
    }

    fn freeze(&self) -> Result<Froze, JailError> {
        let what = |e: std::io::Error| failed(format!("freezing {}: {e}", self.dir.display()));
        self.set(true).map_err(what)?;
        let deadline = Instant::now() + FREEZER_SETTLE;
        let mut asked = Instant::now();
        while !self.settled() {
            if Instant::now() > deadline {
                let _ = self.set(false);
                return Err(failed(format!(
                    "its processes did not all freeze within {} ms ({})",
                    FREEZER_SETTLE.as_millis(),
                    self.dir.display()
                )));
            }
            // A v1 freezer can stay FREEZING when a task forked while the group was being
            // frozen slipped through; asking again freezes the tasks it finds now.
            if asked.elapsed() >= Duration::from_millis(10) {
                self.set(true).map_err(what)?;
                asked = Instant::now();
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(Froze { processes: self.pids().len(), cgroup: true })
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A process as one read of its `/proc/PID/stat` saw it: parent, state letter (`R`, `S`, `T`,
/// `Z`...) and start time.
#[derive(Debug, Clone, Copy)]
struct Seen {
    ppid: i32,
    state: char,
    start: u64,
}

fn stat(pid: i32) -> Option<Seen> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    Some(Seen {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// Whether `pid` lives in the PID namespace with inode `ns`.
fn in_pid_ns(pid: i32, ns: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/pid")).is_ok_and(|m| m.ino() == ns)
}

/// The sandbox's processes: its init's descendants (itself included) and whatever else is in
/// its PID namespace, each as the one read of its stat that placed it there saw it, so the
/// start time a signal is later checked against comes from that same read.
fn scan(tree: SandboxTree) -> Vec<(i32, Seen)> {
    let mut all: HashMap<i32, Seen> = HashMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
            if let Some(seen) = stat(pid) {
                all.insert(pid, seen);
            }
        }
    }
    let root = tree.root.as_raw();
    let mut out: Vec<(i32, Seen)> = all.get(&root).map(|s| (root, *s)).into_iter().collect();
    if let Some(ns) = tree.pid_ns {
        out.extend(all.iter().filter(|(p, _)| **p != root && in_pid_ns(**p, ns)).map(|(p, s)| (*p, *s)));
    }
    let mut i = 0;
    while i < out.len() {
        let parent = out[i].0;
        let children: Vec<(i32, Seen)> = all
            .iter()
            .filter(|(p, s)| s.ppid == parent && !out.iter().any(|(o, _)| o == *p))
            .map(|(p, s)| (*p, *s))
            .collect();
        out.extend(children);
        i += 1;
    }
    out
}

/// Sends `signal` to `pid` if it is still the process that started at `start`. `Ok(false)`:
/// it has ended (or its pid is another process's now).
fn signal_if_same(pid: i32, start: u64, signal: Signal) -> Result<bool, JailError> {
    let fd = match PidFd::open(pid) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOSYS) => {
            return Err(failed(
                "this kernel has no pidfd_open (Linux 5.3+), and this sandbox no freezer cgroup",
            ))
        }
        Err(_) => return Ok(false),
    };
    // Opened first, checked second: if `pid` was reused before the open, the start time
    // differs; after the open, the descriptor keeps naming the process it was opened on.
    Ok(stat(pid).is_some_and(|s| s.start == start) && fd.signal(signal).is_ok())
}

/// Stops every process of the sandbox; returns how many. On failure the ones stopped are
/// continued again.
fn stop_tree(tree: SandboxTree) -> Result<usize, JailError> {
    let mut stopped: HashSet<(i32, u64)> = HashSet::new();
    let deadline = Instant::now() + SETTLE;
    let give_back = |stopped: &HashSet<(i32, u64)>| {
        for (pid, start) in stopped {
            let _ = signal_if_same(*pid, *start, Signal::SIGCONT);
        }
    };
    loop {
        let mut settled = true;
        for (pid, seen) in scan(tree) {
            let ours = stopped.contains(&(pid, seen.start));
            match seen.state {
                // Ended, or stopped by us: nothing left to do for it. One in uninterruptible
                // sleep (a vfork parent waiting for its child, which is stopped too) uses no CPU
                // and stops, with the SIGSTOP it has pending, before it runs any code of its own.
                'Z' | 'X' | 'x' => {}
                'T' | 't' | 'D' if ours => {}
                _ => {
                    settled = false;
                    if !ours {
                        match signal_if_same(pid, seen.start, Signal::SIGSTOP) {
                            Ok(true) => {
                                stopped.insert((pid, seen.start));
                            }
                            Ok(false) => {}
                            Err(e) => {
                                give_back(&stopped);
                                return Err(e);
                            }
                        }
                    }
                }
            }
        }
        if settled {
            return Ok(stopped.len());
        }
        if Instant::now() > deadline {
            give_back(&stopped);
            return Err(failed(format!(
                "its processes did not all stop within {} seconds (they kept starting new ones); it was left running",
                SETTLE.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Continues every process of the sandbox.
fn continue_tree(tree: SandboxTree) -> Result<usize, JailError> {
    let mut n = 0;
    for (pid, seen) in scan(tree) {
        n += usize::from(signal_if_same(pid, seen.start, Signal::SIGCONT)?);
    }
    Ok(n)
}
