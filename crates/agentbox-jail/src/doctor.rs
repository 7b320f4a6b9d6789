//! `agentbox doctor`: which isolation features work on this machine, and what to do about the
//! ones that do not. The decisive check starts a real sandbox.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::hostfs::RealFs;
use crate::limits::{parse_cgroup_mounts, parse_proc_cgroup};
use crate::{
    build_plan, resolve, start, wait_foreground, AfterEnd, HostContext, Outcome, SandboxRequest, Stdio,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to do when the status is not ok.
    pub fix: Option<String>,
}

fn check(name: &'static str, status: Status, detail: impl Into<String>, fix: Option<&str>) -> Check {
    Check { name, status, detail: detail.into(), fix: fix.map(String::from) }
}

fn read_trim(p: &str) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

fn kernel() -> Check {
    let release =
        nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    let mut nums = release.split(|c: char| !c.is_ascii_digit()).filter_map(|s| s.parse::<u32>().ok());
    let (major, minor) = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
    if (major, minor) >= (5, 13) {
        check("kernel", Status::Ok, format!("Linux {release}"), None)
    } else {
        check(
            "kernel",
            Status::Fail,
            format!("Linux {release}"),
            Some("agentbox needs Linux 5.13+ (mount_setattr, Landlock)"),
        )
    }
}

fn user_namespaces() -> Check {
    let max = read_trim("/proc/sys/user/max_user_namespaces").and_then(|s| s.parse::<u64>().ok());
    if max == Some(0) {
        return check(
            "user namespaces",
            Status::Fail,
            "user.max_user_namespaces = 0",
            Some("sysctl -w user.max_user_namespaces=15000"),
        );
    }
    if read_trim("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0")
        && !nix::unistd::geteuid().is_root()
    {
        return check(
            "user namespaces",
            Status::Fail,
            "kernel.unprivileged_userns_clone = 0",
            Some("sysctl -w kernel.unprivileged_userns_clone=1"),
        );
    }
    if read_trim("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1")
        && !nix::unistd::geteuid().is_root()
    {
        return check(
            "user namespaces",
            Status::Warn,
            "AppArmor restricts unprivileged user namespaces",
            Some("add an AppArmor profile allowing userns for the agentbox binary, or sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"),
        );
    }
    check(
        "user namespaces",
        Status::Ok,
        format!("max {}", max.map(|m| m.to_string()).unwrap_or_else(|| "?".into())),
        None,
    )
}

fn landlock() -> Check {
    match agentbox_sys::landlock_abi_version() {
        Ok(v) if v >= 6 => check(
            "landlock",
            Status::Ok,
            format!("ABI {v} (filesystem, abstract-socket and signal scoping)"),
            None,
        ),
        Ok(v) => check(
            "landlock",
            Status::Warn,
            format!("ABI {v}: no abstract-socket scoping, so --network full can reach host abstract sockets"),
            Some("Linux 6.12+ has Landlock ABI 6"),
        ),
        Err(e) => check(
            "landlock",
            Status::Fail,
            format!("unavailable ({})", e.desc()),
            Some("boot with 'landlock' in the lsm= list (CONFIG_SECURITY_LANDLOCK=y)"),
        ),
    }
}

fn seccomp() -> Check {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let filter = status.lines().any(|l| l.starts_with("Seccomp_filters:"));
    if filter || Path::new("/proc/sys/kernel/seccomp/actions_avail").exists() {
        check("seccomp", Status::Ok, "filter mode available", None)
    } else {
        check(
            "seccomp",
            Status::Fail,
            "no seccomp filter support",
            Some("use a kernel built with CONFIG_SECCOMP_FILTER"),
        )
    }
}

fn cgroups() -> Check {
    let mounts = parse_cgroup_mounts(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
    let own = parse_proc_cgroup(&fs::read_to_string("/proc/self/cgroup").unwrap_or_default());
    let v1 = mounts.iter().any(|m| !m.v2);
    let v2 = mounts.iter().any(|m| m.v2);
    let version = match (v1, v2) {
        (true, true) => "v1 + v2 (hybrid)",
        (true, false) => "v1",
        (false, true) => "v2",
        _ => "none",
    };
    let mut writable = Vec::new();
    for ctrl in ["memory", "pids", "cpu"] {
        let dir = mounts.iter().find(|m| !m.v2 && m.controllers.iter().any(|c| c == ctrl)).and_then(|m| {
            own.iter()
                .find(|(cs, _)| cs.iter().any(|c| c == ctrl))
                .map(|(_, p)| m.mount_point.join(p.strip_prefix(&m.root).unwrap_or(p)))
        });
        let dir = dir.or_else(|| {
            let m = mounts.iter().find(|m| m.v2)?;
            let (_, p) = own.iter().find(|(cs, _)| cs.is_empty())?;
            let d = m.mount_point.join(p.strip_prefix(&m.root).unwrap_or(p));
            let ctrls = fs::read_to_string(d.join("cgroup.controllers")).ok()?;
            ctrls.split_whitespace().any(|c| c == ctrl).then_some(d)
        });
        if dir.is_some_and(|d: PathBuf| nix::unistd::access(&d, nix::unistd::AccessFlags::W_OK).is_ok()) {
            writable.push(ctrl);
        }
    }
    let detail = format!(
        "{version}; writable controllers: {}",
        if writable.is_empty() { "none".into() } else { writable.join(", ") }
    );
    if writable.len() == 3 {
        check("cgroups", Status::Ok, detail, None)
    } else {
        check(
            "cgroups",
            Status::Warn,
            detail,
            Some("without a writable controller, --memory uses RLIMIT_DATA (per process), --pids uses RLIMIT_NPROC (refused for root), and --cpus is refused; run as root or in a delegated cgroup (systemd-run --user --scope -p Delegate=yes)"),
        )
    }
}

fn kvm() -> Check {
    let dev = Path::new("/dev/kvm");
    if !dev.exists() {
        return check(
            "kvm",
            Status::Warn,
            "/dev/kvm absent",
            Some("the VM backend will use software emulation (slow)"),
        );
    }
    match nix::unistd::access(dev, nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK) {
        Ok(()) => check(
            "kvm",
            Status::Ok,
            "/dev/kvm present and accessible (whether it boots the guest kernel: the vm backend line)",
            None,
        ),
        Err(_) => check(
            "kvm",
            Status::Warn,
            "/dev/kvm present but not accessible",
            Some("add yourself to the 'kvm' group"),
        ),
    }
}

/// Starts a real sandbox running `true` on a scratch workspace under the temp directory.
fn live_sandbox() -> Check {
    let ws = std::env::temp_dir().join(format!("agentbox-doctor-{}", std::process::id()));
    if let Err(e) = fs::create_dir(&ws) {
        return check("sandbox", Status::Fail, format!("cannot create {}: {e}", ws.display()), None);
    }
    let started = Instant::now();
    let result = (|| {
        let host = HostContext::current()?;
        let req = SandboxRequest {
            command: vec!["true".into()],
            workspace: Some(ws.clone()),
            ..Default::default()
        };
        let spec = resolve(req, &host)?;
        let plan = build_plan(&spec, &RealFs);
        let running = start(&plan, Stdio::Inherit, false)?;
        wait_foreground(running, None, AfterEnd::Reap)
    })();
    let _ = fs::remove_dir(&ws);
    match result {
        Ok(Outcome::Exited(0)) => check(
            "sandbox",
            Status::Ok,
            format!("started and ran `true` in {:.1} ms", started.elapsed().as_secs_f64() * 1e3),
            None,
        ),
        Ok(other) => check("sandbox", Status::Fail, format!("`true` ended with {other:?}"), None),
        Err(e) => check(
            "sandbox",
            Status::Fail,
            e.to_string(),
            Some("fix the failures above; agentbox refuses to run without isolation"),
        ),
    }
}

/// Runs every check. The live sandbox check comes last because it depends on the others.
pub fn doctor() -> Vec<Check> {
    vec![kernel(), user_namespaces(), landlock(), seccomp(), cgroups(), kvm(), live_sandbox()]
}
