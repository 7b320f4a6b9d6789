//! Saved machines: how a VM agent starts in a fraction of a boot.
//!
//! A snapshot is the whole machine (memory, CPU and device state) saved by QEMU's migration
//! when the guest agent has booted and waits for its setup, before it has mounted anything or
//! learnt anything of an agent. Every VM agent whose machine has the same layout (memory, CPUs,
//! network device, accelerator, and the same QEMU, kernel and initramfs: the key) is restored
//! from it, and the guest agent then mounts that agent's shares, sets its clock and reseeds its
//! random generator from the host.
//!
//! A snapshot is made in a sandbox of its own, like the agent's, from which QEMU writes the
//! stream to a descriptor it is handed; the host writes it to `KEY.state` through a temporary
//! file and a rename, under a lock, so concurrent first spawns make it once. Snapshots of other
//! QEMUs, kernels or agentbox builds that no VM used for an hour are removed when a new one is
//! made; a failure to make one is remembered for ten minutes, so the VMs meanwhile boot at once.
//! So is a restore that did not start (QEMU refused the stream, or the restored guest did not
//! answer): its VM's host says so on a pipe it inherits ([`RestoreReport`]), and the VMs of that
//! layout meanwhile boot at once instead of each trying, and waiting on, the same restore first.

use std::fs::File;
use std::io::{BufWriter, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use agentbox_core::SandboxSpec;
use agentbox_jail::{start, wait_streamed, Outcome, Plan, Stdio};
use agentbox_vm::REPORT_ENV;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use crate::vm::{snapshot_path, template_plan, VmAssets};

/// A snapshot just made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Made {
    pub path: PathBuf,
    pub bytes: u64,
    pub took: Duration,
}

/// The longest a snapshot's boot and save may take (a boot under software emulation on a busy
/// machine included).
const MAKE_TIMEOUT: Duration = Duration::from_secs(600);
/// The most of the template sandbox's stderr kept for an error.
const STDERR_LIMIT: usize = 64 << 10;

/// Makes the snapshot `spec`'s VM is restored from, unless it is there already. `Ok(None)`: there
/// was one. An error says why there is none; the VM then boots cold. `making` is called once
/// this call is going to wait for a machine to be booted and saved (by it, or by another spawn
/// that holds the lock), for the person waiting to be told why.
pub fn ensure_snapshot(
    spec: &SandboxSpec,
    assets: &VmAssets,
    making: &mut dyn FnMut(),
) -> Result<Option<Made>, String> {
    let path = snapshot_path(spec, assets)?;
    if usable(&path) {
        touch(&path);
        return Ok(None);
    }
    failure_standing(&path)?;
    making();
    let Some(dir) = path.parent() else { return Err("a snapshot path without a directory".into()) };
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let lock = File::create(dir.join(format!("{stem}.lock"))).map_err(|e| format!("locking: {e}"))?;
    let _lock = Flock::lock(lock, FlockArg::LockExclusive).map_err(|(_, e)| format!("locking: {e}"))?;
    if usable(&path) {
        // Made by another spawn while this one waited.
        return Ok(None);
    }
    // Or that spawn failed while this one waited.
    failure_standing(&path)?;
    // A maker holds this lock while it works: any temporary file of this key now is a killed
    // maker's (hundreds of MiB).
    let prefix = format!(".{stem}.");
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(e.path()).or_else(|_| std::fs::remove_dir_all(e.path()));
        }
    }
    let started = Instant::now();
    let tmp = dir.join(format!(".{stem}.{}.tmp", std::process::id()));
    let made = make(spec, assets, &tmp, &path).and_then(|bytes| {
        // The size first: without it the snapshot is not trusted whole, and is made again.
        let meta = serde_json::to_string(&Meta { identity: assets.identity.clone(), bytes })
            .map_err(|e| e.to_string())?;
        std::fs::write(path.with_extension("json"), meta)
            .map_err(|e| format!("storing the snapshot: {e}"))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("storing the snapshot: {e}"))?;
        Ok(bytes)
    });
    let failed = path.with_extension("failed");
    let bytes = match made {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            remember_failure(&path, &e);
            return Err(e);
        }
    };
    let _ = std::fs::remove_file(&failed);
    remove_stale(dir, &assets.identity);
    Ok(Some(Made { path, bytes, took: started.elapsed() }))
}

/// How long ago `path` was last modified.
fn age(path: &Path) -> Option<Duration> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok())
}

/// The failure to make the snapshot at `path` that still stands: one is not retried by every
/// spawn that follows, each of which would wait for a whole boot.
fn failure_standing(path: &Path) -> Result<(), String> {
    let failed = path.with_extension("failed");
    match age(&failed) {
        Some(age) if age < RETRY_AFTER => {
            // Shown on a terminal: one line of plain text, however it was written.
            let said = std::fs::read(&failed).unwrap_or_default();
            let why: String = one_line(&said).unwrap_or_default().chars().take(FAILURE_SHOWN).collect();
            Err(format!("{why} (tried {}s ago; tried again after {}s)", age.as_secs(), RETRY_AFTER.as_secs()))
        }
        _ => Ok(()),
    }
}

/// How long a failure to make a snapshot stands before the next VM of its layout tries again.
const RETRY_AFTER: Duration = Duration::from_secs(600);
/// Snapshots of other QEMUs, kernels or agentbox builds not restored for this long are removed:
/// an upgrade's old ones go, while two builds in use side by side (an installed one and one being
/// developed) keep theirs.
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// Marks the snapshot at `path` as used now (its metadata's time), for [`remove_stale`].
pub fn touch(path: &Path) {
    if let Ok(f) = File::options().append(true).open(path.with_extension("json")) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// What is known of a snapshot besides its key: what it was made from, and its size (a
/// snapshot cut short, by a full disk or a crash, is made again rather than failing every
/// restore).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Meta {
    identity: String,
    bytes: u64,
}

/// Whether the snapshot at `path` is there whole, and no VM failed to start from it lately.
pub fn usable(path: &Path) -> bool {
    whole(path) && failure_standing(path).is_ok()
}

/// Whether the snapshot at `path` is there whole.
fn whole(path: &Path) -> bool {
    let meta = std::fs::read_to_string(path.with_extension("json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Meta>(&t).ok());
    match (meta, std::fs::metadata(path)) {
        (Some(m), Ok(f)) => f.is_file() && f.len() == m.bytes,
        _ => false,
    }
}

/// Boots the template sandbox and writes what it saves to `tmp`; the snapshot's size.
///
/// The template's sandbox is made from the agent's spec without what the agent brought: no
/// mounts of its own, no persistent home, an empty workspace. A mount over QEMU's firmware, for
/// one, would otherwise end up in the machine every later VM of this layout starts from.
fn make(spec: &SandboxSpec, assets: &VmAssets, tmp: &Path, path: &Path) -> Result<u64, String> {
    let scratch = tmp.with_extension("workspace");
    std::fs::create_dir_all(&scratch).map_err(|e| format!("creating {}: {e}", scratch.display()))?;
    let mut clean = spec.clone();
    clean.mounts.clear();
    clean.overlay = None;
    clean.publish.clear();
    clean.home = agentbox_core::HomeSpec::Tmpfs;
    clean.workspace = scratch.clone();
    clean.workdir = scratch.clone();
    let made = make_from(spec, &clean, assets, tmp, path);
    let _ = std::fs::remove_dir_all(&scratch);
    made
}

/// Boots `agent`'s machine in the sandbox of `sandbox` and saves it to `tmp`, to become `path`.
fn make_from(
    agent: &SandboxSpec,
    sandbox: &SandboxSpec,
    assets: &VmAssets,
    tmp: &Path,
    path: &Path,
) -> Result<u64, String> {
    let (plan, saved_as) = template_plan(agent, sandbox, assets)?;
    if saved_as != path {
        // A machine of another layout would be restored as this one and not match its devices.
        return Err(format!("the template's machine is {}, not {}", saved_as.display(), path.display()));
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let running = start(&plan, Stdio::Pipes, false).map_err(|e| e.to_string())?;
    let done =
        wait_streamed(running, Some(MAKE_TIMEOUT), &mut out, STDERR_LIMIT).map_err(|e| e.to_string())?;
    let said = String::from_utf8_lossy(&done.stderr);
    let said = agentbox_core::termfilter::escape_for_terminal(said.trim());
    match done.outcome {
        Outcome::Exited(0) => {}
        Outcome::Exited(code) => {
            return Err(format!("the machine could not be saved (exit status {code}): {said}"))
        }
        Outcome::Signaled(s) => {
            return Err(format!("the machine's sandbox was killed by signal {s}: {said}"))
        }
        Outcome::TimedOut => {
            return Err(format!("the machine was not saved within {}s", MAKE_TIMEOUT.as_secs()))
        }
    }
    if let Some(e) = done.write_error {
        return Err(format!("writing {}: {e}", tmp.display()));
    }
    let file = out.into_inner().map_err(|e| format!("writing {}: {}", tmp.display(), e.error()))?;
    file.sync_all().map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    if bytes == 0 {
        return Err("the machine was saved as nothing".into());
    }
    restrict(&file).map_err(|e| format!("restricting {}: {e}", tmp.display()))?;
    Ok(bytes)
}

/// Leaves a snapshot readable by the sandboxes QEMU runs in and by no other user: it holds the
/// guest kernel's state every VM of its layout starts from (its address layout, stack canaries,
/// hash keys). An ordinary user's sandboxes run as that user: their own file, 0400. Root's run
/// as [`agentbox_core::ROOT_AGENT_ID`]: root's file in that group, 0440, so that no sandbox
/// owns it (an owner could make it writable again).
fn restrict(file: &File) -> nix::Result<()> {
    use nix::sys::stat::{fchmod, Mode};
    use nix::unistd::{fchown, geteuid, Gid};
    if geteuid().is_root() {
        fchown(file, None, Some(Gid::from_raw(agentbox_core::ROOT_AGENT_ID)))?;
        fchmod(file, Mode::from_bits_truncate(0o440))
    } else {
        fchmod(file, Mode::from_bits_truncate(0o400))
    }
}

/// Removes the snapshots of other QEMUs, kernels or agentbox builds than `identity`'s that no VM
/// was restored from for [`STALE_AFTER`]. (Their lock files stay: removing one another process
/// holds would let two makers in.)
fn remove_stale(dir: &Path, identity: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let other = std::fs::read_to_string(&p)
            .ok()
            .and_then(|t| serde_json::from_str::<Meta>(&t).ok())
            .is_some_and(|m| m.identity != identity);
        let unused = age(&p).is_some_and(|age| age > STALE_AFTER);
        if other && unused {
            let _ = std::fs::remove_file(p.with_extension("state"));
            let _ = std::fs::remove_file(&p);
        }
    }
}

impl std::fmt::Display for Made {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "saved the VM's machine ({} MiB) in {:.1}s to {}",
            self.bytes >> 20,
            self.took.as_secs_f64(),
            self.path.display()
        )
    }
}

/// What a restoring VM's host says of its start: a socket whose other end the host inherits
/// ([`REPORT_ENV`] names it; `keep_fd` hands it over). The host writes why the restore did not
/// start, if it did not, and closes it once the guest is up. A failure is remembered beside the
/// snapshot like a failure to make one ([`RETRY_AFTER`]).
#[derive(Debug)]
pub struct RestoreReport {
    read: OwnedFd,
    pub(crate) write: OwnedFd,
    snapshot: PathBuf,
}

/// The most of a remembered failure that is shown.
const FAILURE_SHOWN: usize = 2000;

/// The most of a report that is read.
const REPORT_LIMIT: u64 = 4096;

impl RestoreReport {
    /// The channel for `plan`, a sandbox whose VM restores `snapshot`; `None` if there is none
    /// to be had (the VM then starts as it would have, unheard). A socket rather than a pipe, so
    /// that the host's send cannot raise SIGPIPE when nobody reads.
    pub(crate) fn attach(plan: &mut Plan, snapshot: PathBuf) -> Option<Self> {
        let (read, write) =
            socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC).ok()?;
        // With the standard descriptors closed, 0 to 2 would be the command's stdio.
        if write.as_raw_fd() < 3 || read.as_raw_fd() < 3 {
            return None;
        }
        plan.process.keep_fd = Some(write.as_raw_fd());
        plan.process.env.push((REPORT_ENV.into(), write.as_raw_fd().to_string()));
        Some(Self { read, write, snapshot })
    }

    /// Once the sandbox is launched (its command has the write end): closes this process's end
    /// and hears the host out on a thread of its own, which ends when the host closes its end.
    pub fn listen(self) -> std::io::Result<JoinHandle<()>> {
        let Self { read, write, snapshot } = self;
        drop(write);
        std::thread::Builder::new().name("restore-report".into()).spawn(move || {
            let mut said = Vec::new();
            let _ = File::from(read).take(REPORT_LIMIT).read_to_end(&mut said);
            if let Some(why) = one_line(&said) {
                remember_failure(&snapshot, &format!("the last VM restored from it did not start: {why}"));
            }
        })
    }
}

/// `said` as one line of plain text, or `None` if it is empty: no control characters, and none
/// of the format characters that reorder what a terminal shows.
fn one_line(said: &[u8]) -> Option<String> {
    let reorders =
        |c: char| matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    let text: String = String::from_utf8_lossy(said)
        .chars()
        .map(|c| if c.is_control() || reorders(c) { ' ' } else { c })
        .collect();
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!text.is_empty()).then_some(text)
}

/// Forgets a failure remembered for the snapshot `spec`'s VM is restored from, and removes that
/// snapshot if it is one VMs failed to start from, so that the next [`ensure_snapshot`] makes it
/// anew (`vm setup`: a person asked for it, rather than for the failure to be waited out).
/// Whether there was one.
pub fn discard_failed(spec: &SandboxSpec, assets: &VmAssets) -> bool {
    let Ok(path) = snapshot_path(spec, assets) else { return false };
    if std::fs::remove_file(path.with_extension("failed")).is_err() {
        return false;
    }
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(path.with_extension("json"));
    true
}

/// Remembers that the snapshot at `path` cannot be used now, and why ([`failure_standing`]):
/// written whole (a temporary file renamed), so a spawn reading it meanwhile never sees it empty.
fn remember_failure(path: &Path, why: &str) {
    let failed = path.with_extension("failed");
    let tmp = path.with_extension(format!("failed.{}", std::process::id()));
    if std::fs::write(&tmp, why).and_then(|()| std::fs::rename(&tmp, &failed)).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}
