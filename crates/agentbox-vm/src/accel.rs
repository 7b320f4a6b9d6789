//! KVM or software emulation, decided by trying.
//!
//! An openable /dev/kvm is not enough: some hosts expose a paravirtual or nested KVM that accepts
//! every ioctl and then never runs a stock kernel to its first instruction. So the first use boots
//! the guest kernel under KVM with the guest agent in probe mode, and counts it as working only if
//! the agent reports within [`PROBE_TIMEOUT`]. The answer is cached per QEMU binary, host kernel
//! and guest image, so the probe's cost (and, on such a host, its timeout) is paid once.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde::{Deserialize, Serialize};

use crate::config::Accel;
use crate::image::GuestImage;
use crate::VmError;

pub const PROBE_TIMEOUT: Duration = Duration::from_secs(20);
/// What the guest agent prints on the console in probe mode.
pub const PROBE_MARKER: &str = "agentbox-probe-ok";
/// The kernel parameter that puts the guest agent in probe mode.
pub const PROBE_PARAM: &str = "agentbox.probe";
/// Forces a choice (`kvm` or `tcg`) without probing.
pub const ACCEL_ENV: &str = "AGENTBOX_VM_ACCEL";

/// The QEMU system emulator for this machine's architecture, from PATH.
pub fn qemu_binary() -> Result<PathBuf, VmError> {
    let name = match std::env::consts::ARCH {
        "aarch64" => "qemu-system-aarch64",
        _ => "qemu-system-x86_64",
    };
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.is_file())
        .ok_or(VmError::NoQemu(if name.ends_with("x86_64") {
            "qemu-system-x86_64"
        } else {
            "qemu-system-aarch64"
        }))
}

#[derive(Debug, Serialize, Deserialize)]
struct Cached {
    key: String,
    accel: Accel,
}

fn cache_key(qemu: &Path, image: &GuestImage) -> String {
    let q = std::fs::metadata(qemu).map(|m| format!("{}:{}", m.len(), m.mtime())).unwrap_or_default();
    let release =
        nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    format!("{q}|{release}|{}", image.source)
}

/// Whether /dev/kvm can be opened for use.
fn kvm_device() -> Result<(), String> {
    match std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("there is no /dev/kvm".into()),
        Err(e) => Err(format!("/dev/kvm cannot be opened ({e})")),
    }
}

/// The accelerator already decided, without probing: forced by [`ACCEL_ENV`], implied by an
/// unusable /dev/kvm, or remembered in one of `cache_files`. `None`: only a probe can tell.
pub fn known(qemu: &Path, image: &GuestImage, cache_files: &[PathBuf]) -> Option<Accel> {
    match std::env::var(ACCEL_ENV).as_deref() {
        Ok("tcg") => return Some(Accel::Tcg { reason: format!("{ACCEL_ENV}=tcg") }),
        Ok("kvm") => return Some(Accel::Kvm),
        _ => {}
    }
    if let Err(reason) = kvm_device() {
        return Some(Accel::Tcg { reason });
    }
    let key = cache_key(qemu, image);
    cache_files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .filter_map(|t| serde_json::from_str::<Cached>(&t).ok())
        .find(|c| c.key == key)
        .map(|c| c.accel)
}

/// The accelerator to use: [`known`], or probed now (the first writable of `cache_files`
/// remembers the answer).
pub fn detect(qemu: &Path, image: &GuestImage, initramfs: &Path, cache_files: &[PathBuf]) -> Accel {
    if let Some(accel) = known(qemu, image, cache_files) {
        return accel;
    }
    let key = cache_key(qemu, image);
    let accel = match probe_kvm(qemu, image, initramfs) {
        Ok(elapsed) if elapsed < PROBE_TIMEOUT => Accel::Kvm,
        Ok(_) | Err(_) => Accel::Tcg {
            reason: format!(
                "KVM did not boot the guest kernel within {}s (a paravirtual or nested KVM that cannot run stock kernels)",
                PROBE_TIMEOUT.as_secs()
            ),
        },
    };
    if let Ok(json) = serde_json::to_string(&Cached { key, accel: accel.clone() }) {
        let _ = cache_files.iter().find(|f| std::fs::write(f, &json).is_ok());
    }
    accel
}

/// Boots the guest in probe mode under KVM; the time it took to report, or why it did not.
pub fn probe_kvm(qemu: &Path, image: &GuestImage, initramfs: &Path) -> Result<Duration, String> {
    let start = Instant::now();
    let cmdline = format!("{} {PROBE_PARAM}", crate::qemu::KERNEL_CMDLINE);
    let mut child = Command::new(qemu)
        .args(["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"])
        .args(["-machine", "microvm", "-accel", "kvm", "-cpu", "host", "-m", "256"])
        .arg("-kernel")
        .arg(image.kernel_path())
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", &cmdline, "-serial", "stdio"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", qemu.display()))?;
    let Some(mut out) = child.stdout.take() else {
        return Err("no console".into());
    };
    // No reader thread: the supervisor probes before it clones the sandbox, which must happen
    // from a single-threaded process.
    let deadline = start + PROBE_TIMEOUT;
    let mut seen = Vec::new();
    let mut ok = false;
    while !ok {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut fds = [PollFd::new(out.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
        let mut buf = [0u8; 4096];
        match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
        ok = String::from_utf8_lossy(&seen).contains(PROBE_MARKER);
    }
    let _ = child.kill();
    let _ = child.wait();
    if ok {
        Ok(start.elapsed())
    } else {
        Err(format!("no report within {}s", PROBE_TIMEOUT.as_secs()))
    }
}
