//! Spec -> plan. Pure apart from the [`HostFs`] questions, so it is unit-tested on described hosts.

use std::path::{Path, PathBuf};

use agentbox_core::{HomeSpec, NetworkMode, SandboxSpec, PROXY_PORT, SANDBOX_HOME, SYSTEM_DIRS};

use crate::hostfs::{HostEntry, HostFs};
use crate::plan::{LandlockPolicy, MountOp, NodeKind, Plan, ProcessPlan};
use crate::seccomp::SeccompPolicy;

/// Device nodes bound from the host into the sandbox's own /dev.
const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Secrets under read-only system directories that stay unreadable even for a root caller (whose
/// uid owns them). Directories are covered whole; `ssh_host_*_key` files are found at build time.
const SECRET_PATHS: &[&str] = &[
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/security/opasswd",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/ssl/private",
    "/etc/krb5.keytab",
    "/etc/NetworkManager/system-connections",
    "/etc/wireguard",
    "/etc/ppp/chap-secrets",
    "/etc/ppp/pap-secrets",
    "/etc/libvirt/secrets",
];

/// Kernel tunables under /proc that stay read-only even where the kernel would let a namespace
/// root write them.
const PROC_READONLY: &[&str] = &["/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs"];

fn depth(p: &Path) -> usize {
    p.components().count()
}

/// Builds the setup plan for `spec` on the host described by `host`.
pub fn build_plan(spec: &SandboxSpec, host: &dyn HostFs) -> Plan {
    let mut mounts = Vec::new();

    for dir in SYSTEM_DIRS {
        let path = PathBuf::from(dir);
        match host.entry(&path) {
            Some(HostEntry::Dir) => mounts.push(MountOp::Bind {
                source: path.clone(),
                target: path,
                kind: NodeKind::Dir,
                writable: false,
            }),
            Some(HostEntry::Symlink(points_to)) => mounts.push(MountOp::Symlink { target: path, points_to }),
            _ => {}
        }
    }

    mounts.push(MountOp::Tmpfs { target: "/dev".into(), mode: 0o755 });
    for node in DEV_NODES {
        let path = Path::new("/dev").join(node);
        if host.entry(&path) == Some(HostEntry::CharDevice) {
            mounts.push(MountOp::Device { source: path.clone(), target: path });
        }
    }
    mounts.push(MountOp::Devpts { target: "/dev/pts".into() });
    mounts.push(MountOp::Symlink { target: "/dev/ptmx".into(), points_to: "pts/ptmx".into() });
    mounts.push(MountOp::Tmpfs { target: "/dev/shm".into(), mode: 0o1777 });
    for (name, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        mounts.push(MountOp::Symlink { target: Path::new("/dev").join(name), points_to: to.into() });
    }

    mounts.push(MountOp::Proc { target: "/proc".into() });
    for p in PROC_READONLY {
        mounts.push(MountOp::ReadonlyRebind { target: p.into() });
    }

    for (dir, mode) in [("/tmp", 0o1777), ("/var/tmp", 0o1777), ("/run", 0o755)] {
        mounts.push(MountOp::Tmpfs { target: dir.into(), mode });
    }

    match &spec.home {
        HomeSpec::Tmpfs => mounts.push(MountOp::Tmpfs { target: SANDBOX_HOME.into(), mode: 0o700 }),
        HomeSpec::Bind(source) => mounts.push(MountOp::Bind {
            source: source.clone(),
            target: SANDBOX_HOME.into(),
            kind: NodeKind::Dir,
            writable: true,
        }),
    }

    mounts.push(match &spec.overlay {
        None => MountOp::Bind {
            source: spec.workspace.clone(),
            target: spec.workspace.clone(),
            kind: NodeKind::Dir,
            writable: true,
        },
        Some(o) => MountOp::Overlay {
            lower: o.lower.clone(),
            upper: o.upper.clone(),
            work: o.work.clone(),
            target: spec.workspace.clone(),
            writable: !o.read_only,
        },
    });

    let mut shadowed: Vec<PathBuf> = Vec::new();
    for m in &spec.mounts {
        // A target the system's read-only tree does not have (`/opt/agents`): its mount point is
        // made in a tmpfs laid over its deepest existing directory, which gets that directory's
        // entries bound back, read-only, and is made read-only itself once everything is in.
        if host.entry(&m.target).is_none() {
            if let Some(dir) = shadow_dir(&m.target, host) {
                if !shadowed.contains(&dir) {
                    mounts.extend(shadow(&dir, host));
                    shadowed.push(dir);
                }
            }
        }
        let kind = match host.entry(&m.source) {
            Some(HostEntry::Dir) => NodeKind::Dir,
            _ => NodeKind::File,
        };
        mounts.push(MountOp::Bind {
            source: m.source.clone(),
            target: m.target.clone(),
            kind,
            writable: m.writable,
        });
    }

    for path in &spec.hidden {
        // What is hidden lives inside a mount: find the host path behind it to know its kind.
        let behind = spec
            .mounts
            .iter()
            .map(|m| (m.source.clone(), m.target.clone()))
            .chain(std::iter::once((spec.workspace.clone(), spec.workspace.clone())))
            .chain(match &spec.home {
                HomeSpec::Bind(h) => Some((h.clone(), PathBuf::from(SANDBOX_HOME))),
                HomeSpec::Tmpfs => None,
            })
            .filter_map(|(src, dst)| path.strip_prefix(&dst).ok().map(|rest| (depth(&dst), src.join(rest))))
            // The innermost mount is the one the path is in.
            .max_by_key(|(d, _)| *d)
            .map(|(_, host)| host);
        match behind.and_then(|h| host.entry(&h)) {
            Some(HostEntry::Dir) => mounts.push(MountOp::Hide { target: path.clone(), kind: NodeKind::Dir }),
            Some(HostEntry::File) => {
                mounts.push(MountOp::Hide { target: path.clone(), kind: NodeKind::File })
            }
            _ => {}
        }
    }

    for secret in secret_paths(host) {
        match host.entry(&secret) {
            Some(HostEntry::Dir) => mounts.push(MountOp::Hide { target: secret, kind: NodeKind::Dir }),
            Some(HostEntry::File) => mounts.push(MountOp::Hide { target: secret, kind: NodeKind::File }),
            _ => {}
        }
    }

    mounts.extend(accounts(spec, host));

    if spec.network == NetworkMode::Full {
        // resolv.conf is often a symlink into /run (systemd-resolved, NetworkManager), which the
        // sandbox replaces with its own tmpfs: bind the file it points at, read-only.
        let resolv = Path::new("/etc/resolv.conf");
        if let (Some(HostEntry::Symlink(_)), Some(real)) = (host.entry(resolv), host.canonical(resolv)) {
            if !SYSTEM_DIRS.iter().any(|d| real.starts_with(d)) {
                mounts.push(MountOp::Bind {
                    source: real.clone(),
                    target: real,
                    kind: NodeKind::File,
                    writable: false,
                });
            }
        }
    }

    // Parents before children: a workspace under /tmp must be bound after the private /tmp, a
    // device node after /dev. The sort is stable, so equal depths keep the order above. Read-only
    // remounts come last, once every mount point below them has been made.
    mounts.sort_by_key(|op| (matches!(op, MountOp::ReadonlyRebind { .. }), depth(op.target())));

    let mut read_write: Vec<PathBuf> =
        vec![spec.workspace.clone(), SANDBOX_HOME.into(), "/tmp".into(), "/var/tmp".into(), "/dev".into()];
    read_write.extend(spec.mounts.iter().filter(|m| m.writable).map(|m| m.target.clone()));

    let (host_uid, host_gid) = {
        let (uid, gid) = host.caller_ids();
        agentbox_core::host_ids_for(uid, gid)
    };
    Plan {
        host_uid,
        host_gid,
        new_netns: spec.network != NetworkMode::Full,
        proxy_port: (spec.network == NetworkMode::Proxy).then_some(PROXY_PORT),
        uid: spec.uid,
        gid: spec.gid,
        hostname: spec.hostname.clone(),
        mounts,
        landlock: LandlockPolicy { read_only: vec!["/".into()], read_write },
        seccomp: SeccompPolicy::standard(),
        limits: spec.limits,
        process: ProcessPlan {
            argv: spec.command.clone(),
            env: spec.env.clone(),
            cwd: spec.workdir.clone(),
            keep_fd: None,
        },
    }
}

/// The directory to lay a tmpfs over for a mount target the host does not have: its deepest
/// existing ancestor, when that is a directory of the read-only system tree (elsewhere, mount
/// points are made in the sandbox's own tmpfs directories).
fn shadow_dir(target: &Path, host: &dyn HostFs) -> Option<PathBuf> {
    let dir = target.ancestors().skip(1).find(|a| host.entry(a).is_some())?;
    let in_system =
        SYSTEM_DIRS.iter().any(|d| dir.starts_with(d) && host.entry(Path::new(d)) == Some(HostEntry::Dir));
    (in_system && host.entry(dir) == Some(HostEntry::Dir)).then(|| dir.to_path_buf())
}

/// A tmpfs over `dir` with `dir`'s entries bound back read-only, and the read-only remount.
fn shadow(dir: &Path, host: &dyn HostFs) -> Vec<MountOp> {
    let mut ops = vec![MountOp::Tmpfs { target: dir.to_path_buf(), mode: 0o755 }];
    for name in host.list(dir) {
        let path = dir.join(name);
        match host.entry(&path) {
            Some(HostEntry::Dir) => ops.push(MountOp::Bind {
                source: path.clone(),
                target: path,
                kind: NodeKind::Dir,
                writable: false,
            }),
            Some(HostEntry::File) => ops.push(MountOp::Bind {
                source: path.clone(),
                target: path,
                kind: NodeKind::File,
                writable: false,
            }),
            Some(HostEntry::Symlink(points_to)) => ops.push(MountOp::Symlink { target: path, points_to }),
            _ => {}
        }
    }
    ops.push(MountOp::ReadonlyRebind { target: dir.to_path_buf() });
    ops
}

/// The sandbox's own /etc/passwd and /etc/group: root, the agent (as `agent`, home
/// /home/agent) and nobody. The host's accounts (names, homes, service users) are not the
/// sandbox's business, and `whoami`, `id` and shell prompts then name the agent.
fn accounts(spec: &SandboxSpec, host: &dyn HostFs) -> Vec<MountOp> {
    let shell =
        if host.entry(Path::new("/bin/bash")).is_some() || host.entry(Path::new("/usr/bin/bash")).is_some() {
            "/bin/bash"
        } else {
            "/bin/sh"
        };
    let nologin = "/usr/sbin/nologin";
    let (uid, gid) = (spec.uid, spec.gid);
    let mut passwd = String::new();
    let mut group = String::new();
    if uid == 0 {
        passwd.push_str(&format!("root:x:0:0:root:{SANDBOX_HOME}:{shell}\n"));
    } else {
        passwd.push_str(&format!("root:x:0:0:root:/root:{nologin}\n"));
        if uid != NOBODY_ID {
            passwd.push_str(&format!("agent:x:{uid}:{gid}:agent:{SANDBOX_HOME}:{shell}\n"));
        }
    }
    passwd.push_str(&format!("nobody:x:{NOBODY_ID}:{NOBODY_ID}:nobody:/nonexistent:{nologin}\n"));
    group.push_str("root:x:0:\n");
    if gid != 0 && gid != NOBODY_ID {
        group.push_str(&format!("agent:x:{gid}:\n"));
    }
    group.push_str(&format!("nogroup:x:{NOBODY_ID}:\n"));
    let mut ops = Vec::new();
    for (file, contents) in [("/etc/passwd", passwd), ("/etc/group", group)] {
        if host.entry(Path::new(file)) == Some(HostEntry::File) {
            ops.push(MountOp::File { target: file.into(), contents });
        }
    }
    ops
}

/// The overflow id: what unmapped host ids look like inside a user namespace.
const NOBODY_ID: u32 = 65534;

fn secret_paths(host: &dyn HostFs) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = SECRET_PATHS.iter().map(PathBuf::from).collect();
    let ssh = Path::new("/etc/ssh");
    let mut keys: Vec<PathBuf> = host
        .list(ssh)
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .filter(|n| n.starts_with("ssh_host_") && n.ends_with("_key"))
        .map(|n| ssh.join(n))
        .collect();
    keys.sort();
    out.extend(keys);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::ffi::OsString;
    use std::time::Duration;

    use agentbox_core::{Limits, MountSpec, ROOT_AGENT_ID};

    use super::*;

    #[derive(Default)]
    struct FakeHost(HashMap<PathBuf, HostEntry>, (u32, u32));

    impl FakeHost {
        fn debian() -> Self {
            let mut h = Self(HashMap::new(), (1000, 1000));
            for d in ["/usr", "/etc", "/opt", "/etc/ssh", "/etc/ssl/private", "/data"] {
                h.0.insert(d.into(), HostEntry::Dir);
            }
            for (l, t) in
                [("/bin", "usr/bin"), ("/lib", "usr/lib"), ("/lib64", "usr/lib64"), ("/sbin", "usr/sbin")]
            {
                h.0.insert(l.into(), HostEntry::Symlink(t.into()));
            }
            for f in [
                "/etc/shadow",
                "/etc/gshadow",
                "/etc/ssh/ssh_host_ed25519_key",
                "/etc/ssh/ssh_host_ed25519_key.pub",
                "/data/f",
                "/etc/passwd",
                "/etc/group",
                "/usr/bin/bash",
            ] {
                h.0.insert(f.into(), HostEntry::File);
            }
            for n in DEV_NODES {
                h.0.insert(Path::new("/dev").join(n), HostEntry::CharDevice);
            }
            h
        }
    }

    impl HostFs for FakeHost {
        fn entry(&self, path: &Path) -> Option<HostEntry> {
            self.0.get(path).cloned()
        }
        fn list(&self, dir: &Path) -> Vec<OsString> {
            self.0
                .keys()
                .filter(|p| p.parent() == Some(dir))
                .filter_map(|p| p.file_name().map(Into::into))
                .collect()
        }
        fn canonical(&self, path: &Path) -> Option<PathBuf> {
            Some(path.into())
        }
        fn caller_ids(&self) -> (u32, u32) {
            self.1
        }
    }

    fn spec(workspace: &str) -> SandboxSpec {
        SandboxSpec {
            command: vec!["true".into()],
            workspace: workspace.into(),
            overlay: None,
            publish: Vec::new(),
            pause_after: None,
            workdir: workspace.into(),
            mounts: vec![],
            network: NetworkMode::None,
            egress: Default::default(),
            env: vec![],
            limits: Limits::default(),
            hostname: "agentbox".into(),
            uid: 1000,
            gid: 1000,
            home: HomeSpec::Tmpfs,
            timeout: Some(Duration::from_secs(1)),
            hidden: vec![],
            backend: Default::default(),
            version: 1,
        }
    }

    fn position(plan: &Plan, target: &str) -> usize {
        plan.mounts
            .iter()
            .position(|m| m.target() == Path::new(target))
            .unwrap_or_else(|| panic!("no op for {target}"))
    }

    #[test]
    fn device_nodes_keep_device_access() {
        let plan = build_plan(&spec("/srv/p"), &FakeHost::debian());
        for n in DEV_NODES {
            let p = Path::new("/dev").join(n);
            assert!(plan.mounts.contains(&MountOp::Device { source: p.clone(), target: p }), "{n}");
        }
        assert!(position(&plan, "/dev") < position(&plan, "/dev/null"));
    }

    #[test]
    fn system_dirs_are_read_only_and_symlinks_are_recreated() {
        let plan = build_plan(&spec("/srv/p"), &FakeHost::debian());
        assert!(plan.mounts.contains(&MountOp::Bind {
            source: "/usr".into(),
            target: "/usr".into(),
            kind: NodeKind::Dir,
            writable: false
        }));
        assert!(plan
            .mounts
            .contains(&MountOp::Symlink { target: "/bin".into(), points_to: "usr/bin".into() }));
        assert!(!plan.mounts.iter().any(|m| m.target() == Path::new("/lib32")));
    }

    #[test]
    fn workspace_under_tmp_is_bound_after_private_tmp() {
        let plan = build_plan(&spec("/tmp/work"), &FakeHost::debian());
        assert!(position(&plan, "/tmp") < position(&plan, "/tmp/work"));
        assert!(plan.landlock.read_write.contains(&PathBuf::from("/tmp/work")));
    }

    #[test]
    fn workspace_inside_sandbox_home_is_bound_after_home() {
        let plan = build_plan(&spec("/home/agent/proj"), &FakeHost::debian());
        assert!(position(&plan, SANDBOX_HOME) < position(&plan, "/home/agent/proj"));
    }

    #[test]
    fn secrets_are_hidden_but_public_keys_stay() {
        let plan = build_plan(&spec("/srv/p"), &FakeHost::debian());
        for t in ["/etc/shadow", "/etc/gshadow", "/etc/ssh/ssh_host_ed25519_key"] {
            assert!(plan.mounts.contains(&MountOp::Hide { target: t.into(), kind: NodeKind::File }), "{t}");
        }
        assert!(plan
            .mounts
            .contains(&MountOp::Hide { target: "/etc/ssl/private".into(), kind: NodeKind::Dir }));
        assert!(!plan.mounts.iter().any(|m| m.target() == Path::new("/etc/ssh/ssh_host_ed25519_key.pub")));
        assert!(position(&plan, "/etc") < position(&plan, "/etc/shadow"));
    }

    #[test]
    fn host_home_is_never_mounted_and_only_declared_paths_are_writable() {
        let mut s = spec("/srv/p");
        s.mounts = vec![
            MountSpec { source: "/data".into(), target: "/mnt/data".into(), writable: false },
            MountSpec { source: "/data/f".into(), target: "/mnt/f".into(), writable: true },
        ];
        let plan = build_plan(&s, &FakeHost::debian());
        assert!(!plan.mounts.iter().any(|m| matches!(m, MountOp::Bind { source, .. } if source.starts_with("/home") || source.starts_with("/root"))));
        assert!(plan.mounts.contains(&MountOp::Bind {
            source: "/data/f".into(),
            target: "/mnt/f".into(),
            kind: NodeKind::File,
            writable: true
        }));
        assert!(plan.landlock.read_write.contains(&PathBuf::from("/mnt/f")));
        assert!(!plan.landlock.read_write.contains(&PathBuf::from("/mnt/data")));
        assert_eq!(plan.landlock.read_only, vec![PathBuf::from("/")]);
    }

    #[test]
    fn hidden_paths_inside_mounts_are_covered() {
        let mut s = spec("/srv/p");
        // The home is bound too: the path must be looked up in the innermost mount.
        s.home = HomeSpec::Bind("/srv/agent-home".into());
        s.mounts =
            vec![MountSpec { source: "/data".into(), target: "/home/agent/.cfg".into(), writable: true }];
        s.hidden = vec!["/home/agent/.cfg/f".into(), "/home/agent/.cfg/missing".into()];
        let plan = build_plan(&s, &FakeHost::debian());
        assert!(plan
            .mounts
            .contains(&MountOp::Hide { target: "/home/agent/.cfg/f".into(), kind: NodeKind::File }));
        assert!(!plan.mounts.iter().any(|m| m.target() == Path::new("/home/agent/.cfg/missing")));
        assert!(position(&plan, "/home/agent/.cfg") < position(&plan, "/home/agent/.cfg/f"));
    }

    #[test]
    fn the_sandbox_lists_only_its_own_accounts() {
        let plan = build_plan(&spec("/srv/p"), &FakeHost::debian());
        let file = |t: &str| {
            plan.mounts
                .iter()
                .find_map(|m| match m {
                    MountOp::File { target, contents } if target == Path::new(t) => Some(contents.clone()),
                    _ => None,
                })
                .unwrap()
        };
        assert_eq!(
            file("/etc/passwd"),
            "root:x:0:0:root:/root:/usr/sbin/nologin\nagent:x:1000:1000:agent:/home/agent:/bin/bash\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        );
        assert_eq!(file("/etc/group"), "root:x:0:\nagent:x:1000:\nnogroup:x:65534:\n");
        assert!(position(&plan, "/etc") < position(&plan, "/etc/passwd"));
        let mut s = spec("/srv/p");
        (s.uid, s.gid) = (0, 0);
        let plan = build_plan(&s, &FakeHost::debian());
        assert!(plan.mounts.iter().any(|m| matches!(m, MountOp::File { contents, .. }
            if contents.starts_with("root:x:0:0:root:/home/agent:/bin/bash\nnobody:"))));
    }

    #[test]
    fn root_callers_run_the_agent_as_an_unprivileged_host_id() {
        let mut host = FakeHost::debian();
        let plan = build_plan(&spec("/srv/p"), &host);
        assert_eq!((plan.uid, plan.host_uid, plan.host_gid), (1000, 1000, 1000));
        host.1 = (0, 0);
        let plan = build_plan(&spec("/srv/p"), &host);
        assert_eq!((plan.uid, plan.host_uid, plan.host_gid), (1000, ROOT_AGENT_ID, ROOT_AGENT_ID));
        host.1 = (1234, 99);
        let plan = build_plan(&spec("/srv/p"), &host);
        assert_eq!((plan.host_uid, plan.host_gid), (1234, 99));
    }

    #[test]
    fn network_modes() {
        assert!(build_plan(&spec("/srv/p"), &FakeHost::debian()).new_netns);
        let mut s = spec("/srv/p");
        s.network = NetworkMode::Full;
        assert!(!build_plan(&s, &FakeHost::debian()).new_netns);
    }

    #[test]
    fn proxy_mode_listens_inside_a_private_netns() {
        let mut s = spec("/work/p");
        assert_eq!(build_plan(&s, &FakeHost::debian()).proxy_port, None);
        s.network = NetworkMode::Proxy;
        let plan = build_plan(&s, &FakeHost::debian());
        assert!(plan.new_netns);
        assert_eq!(plan.proxy_port, Some(PROXY_PORT));
        s.network = NetworkMode::Full;
        let plan = build_plan(&s, &FakeHost::debian());
        assert!(!plan.new_netns && plan.proxy_port.is_none());
    }
}
