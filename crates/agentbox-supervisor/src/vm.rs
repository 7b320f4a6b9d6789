//! `--backend vm`: the `ns` plan of the agent's own spec, turned into the plan of a sandbox that
//! runs QEMU instead of the agent.
//!
//! What QEMU may see is what the agent would have seen in an `ns` sandbox, because QEMU runs in
//! exactly that sandbox: the guest gets that view as a read-only 9p root, each writable bind
//! (workspace, persistent home, `-v ...:rw`) as a writable share, fresh tmpfs where the sandbox
//! has tmpfs, and nothing else. The sandbox's proxy listener on its loopback is the guest's only
//! way out (`proxy` mode); in `none` the guest has no network device.

use std::path::{Path, PathBuf};

use agentbox_core::{Limits, NetworkMode, SandboxSpec, PROXY_PORT, VM_DEFAULT_MEMORY};
use agentbox_jail::{build_plan, MountOp, NodeKind, Plan, ProcessPlan, RealFs};
use agentbox_vm::qemu::{QemuConfig, Share, Start};

use crate::vm_snapshot::RestoreReport;
use agentbox_vm::{
    share_slots, Accel, Boot, GuestImage, GuestMount, GuestSetup, ProcSpec, VmError, VmLaunch,
    GUEST_PROXY_ADDR, INFRA_DIR, LAUNCH_ENV, SHARE_SLOTS, SNAPSHOT_FILE,
};

/// QEMU's own memory beyond the guest's (translation cache, device buffers, the 9p server).
const QEMU_OVERHEAD: u64 = 512 << 20;

/// What a VM needs from the host, resolved before the sandbox is built.
#[derive(Debug, Clone, PartialEq)]
pub struct VmAssets {
    pub qemu: PathBuf,
    pub exe: PathBuf,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub accel: Accel,
    /// Where saved machines are kept (`KEY.state`), see [`crate::vm_snapshot`]; `None` when
    /// [`NO_SNAPSHOT_ENV`] turns them off and every VM boots.
    pub snapshots: Option<PathBuf>,
    /// Which QEMU, kernel and initramfs these are, on which host kernel and CPU: part of every
    /// snapshot's key, so a change to any of them (an upgrade of agentbox, QEMU, the guest or host
    /// kernel, another CPU) makes a new one.
    pub identity: String,
    /// The guest's TSC frequency under TCG ([`QemuConfig::tsc_khz`]), read once per host boot
    /// and remembered: read anew at each spawn it follows frequency scaling, and every spawn's
    /// machine (and snapshot key) would differ.
    pub tsc_khz: u64,
    /// Boot the guest kernel locked down: the image's modules are signed.
    pub lockdown: bool,
}

impl VmAssets {
    /// The guest image from `image_dir`, its initramfs (built into `work_dir` if needed) and the
    /// accelerator (probed once, remembered beside the image or in `work_dir`).
    pub fn resolve(image_dir: &Path, work_dir: &Path) -> Result<Self, VmError> {
        let image = GuestImage::load(image_dir)?;
        let qemu = agentbox_vm::accel::qemu_binary()?;
        let exe = std::env::current_exe()
            .map_err(|e| VmError::Setup(format!("locating the agentbox binary: {e}")))?;
        let initramfs = image.initramfs(Path::new("/proc/self/exe"), work_dir)?;
        let accel = agentbox_vm::accel::detect(&qemu, &image, &initramfs, &accel_caches(image_dir, work_dir));
        let kernel = image.kernel_path();
        let id = |p: &Path| {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(p).map(|m| (m.len(), m.mtime(), m.ino())).unwrap_or_default();
            format!("{}:{}:{}:{}", p.display(), m.0, m.1, m.2)
        };
        let tsc_khz = remembered_tsc_khz(&[image_dir.join("tsc.json"), work_dir.join("tsc.json")]);
        let host = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        // The initramfs by name: it names the binary and image it holds, and is the same
        // whichever AGENTBOX_HOME built it.
        let identity = format!(
            "{}|{}|{}|{host}|{}|tsc {tsc_khz}",
            id(&qemu),
            id(&kernel),
            initramfs.file_name().unwrap_or_default().to_string_lossy(),
            cpu_identity(),
        );
        let off = std::env::var(NO_SNAPSHOT_ENV).is_ok_and(|v| v == "off");
        let snapshots = (!off).then(|| snapshot_dir(image_dir, work_dir));
        let lockdown = image.modules_signed();
        Ok(Self { qemu, exe, kernel, initramfs, accel, snapshots, identity, tsc_khz, lockdown })
    }

    /// The accelerator VMs get here if it is already decided: no initramfs is built and no KVM
    /// probe runs (for `info`).
    pub fn known_accel(image_dir: &Path, work_dir: &Path) -> Option<Accel> {
        let image = GuestImage::load(image_dir).ok()?;
        let qemu = agentbox_vm::accel::qemu_binary().ok()?;
        agentbox_vm::accel::known(&qemu, &image, &accel_caches(image_dir, work_dir))
    }
}

/// The host CPU's model and features, hashed: a KVM guest saved on one CPU may use instructions
/// another lacks.
fn cpu_identity() -> String {
    use std::hash::{Hash, Hasher};
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for key in ["model name", "flags"] {
        info.lines().find(|l| l.starts_with(key)).hash(&mut h);
    }
    format!("cpu {:016x}", h.finish())
}

/// The TSC frequency measured once this boot (`/proc/sys/kernel/random/boot_id`), from the first
/// of `files` that remembers it, or measured now and written to the first that takes it.
fn remembered_tsc_khz(files: &[PathBuf]) -> u64 {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Tsc {
        boot: String,
        khz: u64,
    }
    let boot =
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default().trim().to_string();
    let known = files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .filter_map(|t| serde_json::from_str::<Tsc>(&t).ok())
        .find(|t| t.boot == boot && t.khz > 0);
    if let Some(t) = known {
        return t.khz;
    }
    let khz = agentbox_vm::qemu::host_tsc_khz();
    if let Ok(json) = serde_json::to_string(&Tsc { boot, khz }) {
        let _ = files.iter().find(|f| std::fs::write(f, &json).is_ok());
    }
    khz
}

/// Set to `off`, VMs boot instead of starting from a snapshot (to measure or rule out the
/// snapshot path).
pub const NO_SNAPSHOT_ENV: &str = "AGENTBOX_VM_SNAPSHOT";

/// Where snapshots are kept: beside the guest image, shared by every AGENTBOX_HOME of this user,
/// when that directory is this user's own; in `work_dir` otherwise. A VM runs whatever machine
/// its snapshot holds, so one is never taken from a directory another user can write.
fn snapshot_dir(image_dir: &Path, work_dir: &Path) -> PathBuf {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let shared = image_dir.join("snapshots");
    let _ = std::fs::DirBuilder::new().mode(0o755).create(&shared);
    let own = |p: &Path| {
        std::fs::symlink_metadata(p)
            .is_ok_and(|m| m.is_dir() && m.uid() == nix::unistd::geteuid().as_raw() && m.mode() & 0o022 == 0)
    };
    if own(image_dir) && own(&shared) {
        shared
    } else {
        work_dir.join("snapshots")
    }
}

/// Where the probe's answer is remembered: beside the shared image (written by `vm setup`), or
/// in this AGENTBOX_HOME when the image directory is not writable.
fn accel_caches(image_dir: &Path, work_dir: &Path) -> [PathBuf; 2] {
    [image_dir.join("accel.json"), work_dir.join("accel.json")]
}

fn infra(name: &str) -> PathBuf {
    Path::new(INFRA_DIR).join(name)
}

fn under(p: &Path, dirs: &[PathBuf]) -> bool {
    dirs.iter().any(|d| p != d && p.starts_with(d))
}

/// The guest's mounts and QEMU's shares for the `ns` plan `plan` of the agent.
fn guest_view(plan: &Plan, spec: &SandboxSpec) -> Result<(Vec<GuestMount>, Vec<Share>), String> {
    let mut mounts = Vec::new();
    let mut shares = vec![Share { tag: "root".into(), path: "/".into(), writable: false }];
    let mut tmpfs: Vec<PathBuf> = Vec::new();
    for op in &plan.mounts {
        let target = op.target();
        if target.starts_with("/dev") || target.starts_with("/proc") {
            continue;
        }
        match op {
            MountOp::Tmpfs { mode, .. } => {
                let (uid, gid) = if mode & 0o1000 != 0 { (0, 0) } else { (spec.uid, spec.gid) };
                mounts.push(GuestMount::Tmpfs { target: target.clone(), mode: *mode, uid, gid });
                tmpfs.push(target.clone());
            }
            MountOp::Bind { writable: true, kind: NodeKind::Dir, .. } => {
                let tag = format!("s{}", shares.len());
                shares.push(Share { tag: tag.clone(), path: target.clone(), writable: true });
                mounts.push(GuestMount::Share { tag, target: target.clone(), writable: true });
            }
            MountOp::Bind { writable: true, kind: NodeKind::File, .. } => {
                return Err(format!(
                    "--backend vm cannot share the single file {} writable: mount its directory instead",
                    target.display()
                ));
            }
            MountOp::Bind { writable: false, .. } | MountOp::Hide { .. } if under(target, &tmpfs) => {
                mounts.push(GuestMount::Rebind { target: target.clone() });
            }
            _ => {}
        }
    }
    Ok((mounts, shares))
}

/// The plan of the sandbox that runs the agent's VM: restored from its snapshot when there is
/// one, booted otherwise. A restore comes with the pipe its VM's host reports on: the caller
/// [`RestoreReport::listen`]s once the sandbox is launched.
pub fn vm_plan(spec: &SandboxSpec, assets: &VmAssets) -> Result<(Plan, Option<RestoreReport>), String> {
    let plan = build_plan(spec, &RealFs);
    let slots = slots_of(&plan, spec)?;
    let (mut plan, key, restores) = plan_for(plan, spec, slots, assets, false)?;
    let report = match (restores, key) {
        (true, Ok(snapshot)) => RestoreReport::attach(&mut plan, snapshot),
        _ => None,
    };
    Ok((plan, report))
}

/// The plan of a sandbox that boots the machine `agent`'s VM would run and saves it to its stdout
/// ([`Boot::Template`]), and the snapshot it is saved as. The sandbox is `sandbox`'s (the agent's
/// spec without what the agent brought); the machine's devices are the agent's, share slots
/// included, so that the snapshot is the one `agent`'s VM is restored from. The shares lead
/// nowhere: the guest mounts none before it is saved.
pub fn template_plan(
    agent: &SandboxSpec,
    sandbox: &SandboxSpec,
    assets: &VmAssets,
) -> Result<(Plan, PathBuf), String> {
    let slots = slots_of(&build_plan(agent, &RealFs), agent)?;
    let (plan, saved_as, _) = plan_for(build_plan(sandbox, &RealFs), sandbox, slots, assets, true)?;
    Ok((plan, saved_as?))
}

/// The snapshot `spec`'s VM is restored from (which may not exist yet), or why it cannot have
/// one.
pub fn snapshot_path(spec: &SandboxSpec, assets: &VmAssets) -> Result<PathBuf, String> {
    let plan = build_plan(spec, &RealFs);
    let slots = slots_of(&plan, spec)?;
    let (_, qemu) = machine(&plan, spec, slots, assets)?;
    snapshot_of(&qemu, assets)
}

/// How many writable share slots the VM of `spec` (whose `ns` plan is `plan`) has: the fewest of
/// [`SHARE_SLOTS`] that hold its writable shares, or just those when more than any snapshot has.
fn slots_of(plan: &Plan, spec: &SandboxSpec) -> Result<usize, String> {
    let writable = guest_view(plan, spec)?.1.len() - 1;
    Ok(share_slots(writable).unwrap_or(writable))
}

fn snapshot_of(qemu: &QemuConfig, assets: &VmAssets) -> Result<PathBuf, String> {
    let writable = qemu.shares.len() - 1;
    if share_slots(writable) != Some(writable) {
        let most = SHARE_SLOTS[SHARE_SLOTS.len() - 1];
        return Err(format!("{writable} writable shares, more than a snapshot's {most}"));
    }
    let dir = assets.snapshots.as_ref().ok_or(format!("{NO_SNAPSHOT_ENV}=off"))?;
    Ok(dir.join(format!("{}.state", qemu.snapshot_key(&assets.identity))))
}

/// The guest's mounts and QEMU's configuration for `spec`, its shares padded to `slots` writable
/// ones (a snapshot's fixed layout).
fn machine(
    plan: &Plan,
    spec: &SandboxSpec,
    slots: usize,
    assets: &VmAssets,
) -> Result<(Vec<GuestMount>, QemuConfig), String> {
    let (mounts, mut shares) = guest_view(plan, spec)?;
    if shares.len() > 1 + slots {
        return Err(format!("{} writable shares, more than the machine's {slots}", shares.len() - 1));
    }
    while shares.len() < 1 + slots {
        shares.push(Share { tag: format!("s{}", shares.len()), path: INFRA_DIR.into(), writable: false });
    }
    let memory = spec.limits.memory.unwrap_or(VM_DEFAULT_MEMORY);
    let qemu = QemuConfig {
        binary: assets.qemu.clone(),
        accel: assets.accel.clone(),
        memory_mib: memory >> 20,
        cpus: spec.limits.cpus.map(|c| c.ceil().max(1.0) as u32).unwrap_or(1),
        kernel: infra("vmlinuz"),
        initramfs: infra("initramfs"),
        shares,
        proxy_forward: spec.network == NetworkMode::Proxy,
        tsc_khz: assets.tsc_khz,
        lockdown: assets.lockdown,
        forward_command: vec![
            infra("agentbox").to_string_lossy().into_owned(),
            "__vmfwd".into(),
            PROXY_PORT.to_string(),
        ],
    };
    Ok((mounts, qemu))
}

/// The plan, the snapshot its machine is restored from or saved as (or why it has none), and
/// whether it is restored from it.
fn plan_for(
    mut plan: Plan,
    spec: &SandboxSpec,
    slots: usize,
    assets: &VmAssets,
    template: bool,
) -> Result<(Plan, Result<PathBuf, String>, bool), String> {
    let (mounts, mut qemu) = machine(&plan, spec, slots, assets)?;
    let proxy = spec.network == NetworkMode::Proxy;
    let key = snapshot_of(&qemu, assets);
    let snapshot = key.clone().ok().filter(|p| !template && crate::vm_snapshot::usable(p));
    let boot = match (&snapshot, template) {
        (_, true) => {
            for share in qemu.shares.iter_mut().skip(1) {
                *share = Share { path: INFRA_DIR.into(), writable: false, ..share.clone() };
            }
            Boot::Template
        }
        (Some(_), false) => Boot::Restore { qemu: qemu.argv(Start::Restore) },
        (None, false) => Boot::Cold,
    };
    let restores = matches!(boot, Boot::Restore { .. });
    let launch = VmLaunch {
        qemu: qemu.argv(if template { Start::Template } else { Start::Boot }),
        boot,
        accel: assets.accel.clone(),
        boot_timeout_secs: if assets.accel == Accel::Kvm { 60 } else { 240 },
        setup: GuestSetup {
            hostname: spec.hostname.clone(),
            root_tag: "root".into(),
            mounts,
            network: proxy,
            proxy_rewrite: proxy
                .then(|| (format!("127.0.0.1:{PROXY_PORT}"), format!("{GUEST_PROXY_ADDR}:{PROXY_PORT}"))),
            pids: spec.limits.pids,
            clock: None,
            entropy: Vec::new(),
        },
        main: ProcSpec {
            argv: spec.command.clone(),
            env: spec.env.clone(),
            cwd: spec.workdir.clone(),
            uid: spec.uid,
            gid: spec.gid,
            tty: true,
            rows: 24,
            cols: 80,
        },
    };
    let json = serde_json::to_string(&launch).map_err(|e| e.to_string())?;
    let mut files = vec![
        (assets.exe.clone(), infra("agentbox")),
        (assets.kernel.clone(), infra("vmlinuz")),
        (assets.initramfs.clone(), infra("initramfs")),
    ];
    if let Some(s) = snapshot {
        files.push((s, SNAPSHOT_FILE.into()));
    }
    for (source, target) in files {
        plan.mounts.push(MountOp::Bind { source, target, kind: NodeKind::File, writable: false });
    }
    if assets.accel == Accel::Kvm {
        plan.mounts.push(MountOp::Device { source: "/dev/kvm".into(), target: "/dev/kvm".into() });
    }
    plan.mounts.sort_by_key(|op| op.target().components().count());
    plan.process = ProcessPlan {
        argv: vec![infra("agentbox").into_os_string(), "__vmm".into()],
        env: vec![(LAUNCH_ENV.into(), json), ("PATH".into(), "/usr/bin:/bin".into())],
        cwd: "/".into(),
        keep_fd: None,
    };
    // The guest's memory and CPUs are sized by QEMU; the sandbox only bounds QEMU itself. The
    // pids limit applies inside the guest (a cgroup there), since QEMU's threads are not the
    // agent's processes.
    plan.limits = Limits { memory: spec.limits.memory.map(|m| m + QEMU_OVERHEAD), pids: None, cpus: None };
    Ok((plan, key, restores))
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentbox_core::{HomeSpec, MountSpec};

    fn spec(network: NetworkMode) -> SandboxSpec {
        let ws = std::env::temp_dir();
        SandboxSpec {
            command: vec!["bash".into()],
            workspace: ws.clone(),
            overlay: None,
            publish: Vec::new(),
            pause_after: None,
            workdir: ws,
            mounts: vec![MountSpec {
                source: "/usr/share".into(),
                target: "/home/agent/share".into(),
                writable: false,
            }],
            network,
            egress: Default::default(),
            env: vec![("HTTPS_PROXY".into(), "http://127.0.0.1:3128".into())],
            limits: Limits { memory: Some(512 << 20), pids: Some(100), cpus: Some(1.5) },
            hostname: "h".into(),
            uid: 1000,
            gid: 1000,
            home: HomeSpec::Tmpfs,
            timeout: None,
            hidden: vec![],
            backend: agentbox_core::Backend::Vm,
            version: 1,
        }
    }

    fn assets() -> VmAssets {
        VmAssets {
            qemu: "/usr/bin/qemu-system-x86_64".into(),
            exe: "/usr/bin/true".into(),
            kernel: "/k".into(),
            initramfs: "/i".into(),
            accel: Accel::Tcg { reason: "test".into() },
            snapshots: Some("/nonexistent/snapshots".into()),
            identity: "q|k|i".into(),
            tsc_khz: 2_000_000,
            lockdown: true,
        }
    }

    fn launch(plan: &Plan) -> VmLaunch {
        let json = &plan.process.env.iter().find(|(k, _)| k == LAUNCH_ENV).unwrap().1;
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn qemu_runs_in_the_agents_sandbox_with_the_workspace_shared_writable() {
        let s = spec(NetworkMode::None);
        let plan = vm_plan(&s, &assets()).unwrap().0;
        assert_eq!(
            plan.process.argv,
            vec![std::ffi::OsString::from("/run/agentbox-vm/agentbox"), "__vmm".into()]
        );
        assert!(plan.new_netns && plan.proxy_port.is_none());
        assert_eq!(plan.limits.memory, Some((512 << 20) + QEMU_OVERHEAD));
        assert_eq!(plan.limits.pids, None);
        let l = launch(&plan);
        let q = l.qemu.join(" ");
        assert!(q.contains("-m 512 -smp 2"), "{q}");
        assert!(
            q.contains(&format!(
                "path={},security_model=none,multidevs=remap,readonly=off",
                s.workspace.display()
            )),
            "{q}"
        );
        assert!(q.contains("-nic none"), "{q}");
        assert_eq!(l.setup.pids, Some(100));
        assert!(!l.setup.network);
        // The home tmpfs belongs to the agent; /tmp is sticky and root's.
        assert!(l.setup.mounts.contains(&GuestMount::Tmpfs {
            target: "/home/agent".into(),
            mode: 0o700,
            uid: 1000,
            gid: 1000
        }));
        assert!(l.setup.mounts.contains(&GuestMount::Tmpfs {
            target: "/tmp".into(),
            mode: 0o1777,
            uid: 0,
            gid: 0
        }));
        // A read-only mount under the home tmpfs is bound back from the root share.
        assert!(l.setup.mounts.contains(&GuestMount::Rebind { target: "/home/agent/share".into() }));
        // The kernel, initramfs and binary are bound in; no /dev/kvm under TCG.
        assert!(plan.mounts.iter().any(|m| m.target() == Path::new("/run/agentbox-vm/initramfs")));
        assert!(!plan.mounts.iter().any(|m| m.target() == Path::new("/dev/kvm")));
    }

    #[test]
    fn proxy_mode_forwards_to_the_sandbox_loopback_and_kvm_gets_the_device() {
        let mut a = assets();
        a.accel = Accel::Kvm;
        let plan = vm_plan(&spec(NetworkMode::Proxy), &a).unwrap().0;
        assert_eq!(plan.proxy_port, Some(PROXY_PORT));
        let l = launch(&plan);
        assert!(l
            .qemu
            .join(" ")
            .contains("restrict=on,guestfwd=tcp:10.0.2.100:3128-cmd:/run/agentbox-vm/agentbox __vmfwd 3128"));
        assert_eq!(l.setup.proxy_rewrite, Some(("127.0.0.1:3128".into(), "10.0.2.100:3128".into())));
        assert!(plan
            .mounts
            .iter()
            .any(|m| matches!(m, MountOp::Device { target, .. } if target == Path::new("/dev/kvm"))));
    }

    #[test]
    fn a_saved_machine_is_restored_and_the_template_sees_no_agent_path() {
        let dir = tempfile::tempdir().unwrap();
        for accel in [Accel::Kvm, Accel::Tcg { reason: "test".into() }] {
            let mut a = assets();
            a.accel = accel.clone();
            a.snapshots = Some(dir.path().to_path_buf());
            let s = spec(NetworkMode::Proxy);
            // No snapshot yet: a cold boot.
            let cold = launch(&vm_plan(&s, &a).unwrap().0);
            assert_eq!(cold.boot, Boot::Cold);
            assert!(cold.qemu.iter().any(|x| x == "-kernel"));
            // The root share and two writable slots: the workspace and one spare.
            let nine_p = |q: &[String]| q.iter().filter(|x| x.starts_with("virtio-9p-device")).count();
            assert_eq!(nine_p(&cold.qemu), 1 + 2);
            // The template: booted with the template parameter, every share leading to the
            // empty infrastructure directory.
            let t = launch(&template_plan(&s, &s, &a).unwrap().0);
            assert_eq!(t.boot, Boot::Template);
            let tq = t.qemu.join(" ");
            assert!(tq.contains(agentbox_vm::qemu::TEMPLATE_PARAM), "{tq}");
            assert!(!tq.contains(&format!("path={},", s.workspace.display())), "{tq}");
            assert!(launch(&vm_plan(&s, &a).unwrap().0)
                .qemu
                .join(" ")
                .contains(&format!("path={},", s.workspace.display())));
            // Once saved (whole, as its metadata says), it is what the VM starts from.
            let path = snapshot_path(&s, &a).unwrap();
            std::fs::write(&path, b"machine").unwrap();
            assert_eq!(
                launch(&vm_plan(&s, &a).unwrap().0).boot,
                Boot::Cold,
                "no metadata: not trusted whole"
            );
            std::fs::write(path.with_extension("json"), r#"{"identity":"q|k|i","bytes":7}"#).unwrap();
            let (plan, report) = vm_plan(&s, &a).unwrap();
            let Boot::Restore { qemu } = launch(&plan).boot else { panic!("not restored") };
            // Its host gets the pipe it reports on, named in its environment.
            let report = report.expect("a restore without its report");
            let fd = plan.process.keep_fd.expect("no descriptor handed over");
            assert!(plan
                .process
                .env
                .iter()
                .any(|(k, v)| k == agentbox_vm::REPORT_ENV && *v == fd.to_string()));
            assert!(qemu.windows(2).any(|w| w == ["-incoming", "fd:0"]), "{qemu:?}");
            if accel == Accel::Kvm {
                assert!(qemu.join(" ").contains("-accel kvm -cpu host"), "{qemu:?}");
            }
            assert!(plan.mounts.iter().any(|m| matches!(m,
                MountOp::Bind { source, target, writable: false, .. }
                    if source == &path && target == Path::new(SNAPSHOT_FILE))));
            // The host says the restore did not start: the VMs of this layout boot at once
            // meanwhile, and are told why (in plain text, whatever the host wrote).
            let host_end = report.write.try_clone().unwrap();
            let listening = report.listen().unwrap();
            nix::unistd::write(&host_end, "QEMU said: \x1b[2Jbad\nstream\u{202e}\n".as_bytes()).unwrap();
            drop(host_end);
            listening.join().unwrap();
            let (plan, report) = vm_plan(&s, &a).unwrap();
            assert_eq!(launch(&plan).boot, Boot::Cold);
            assert!(report.is_none() && plan.process.keep_fd.is_none());
            let why = crate::ensure_snapshot(&s, &a, &mut || panic!("made again while the failure stands"))
                .unwrap_err();
            assert!(why.contains("did not start: QEMU said: [2Jbad stream (tried"), "{why}");
            assert!(!why.contains('\x1b'), "{why:?}");
            // Once it no longer stands, the snapshot is tried again.
            std::fs::remove_file(path.with_extension("failed")).unwrap();
            assert!(matches!(launch(&vm_plan(&s, &a).unwrap().0).boot, Boot::Restore { .. }));
            // A host that says nothing (the guest came up) leaves the snapshot in use.
            let (_, report) = vm_plan(&s, &a).unwrap();
            report.unwrap().listen().unwrap().join().unwrap();
            assert!(crate::vm_snapshot::usable(&path));
            // Cut short: booted cold again.
            std::fs::write(&path, b"mach").unwrap();
            assert_eq!(launch(&vm_plan(&s, &a).unwrap().0).boot, Boot::Cold);
            // Three writable shares get four slots: another machine, another snapshot.
            let mut more = spec(NetworkMode::Proxy);
            let _extra = with_writable_mounts(&mut more, 2);
            assert_eq!(nine_p(&launch(&vm_plan(&more, &a).unwrap().0).qemu), 1 + 4);
            assert_ne!(snapshot_path(&more, &a).unwrap(), path);
            // Its template runs in a sandbox without those mounts, and still has their slots:
            // it is saved as the snapshot this agent is restored from.
            let mut bare = more.clone();
            bare.mounts.clear();
            let (t, saved_as) = template_plan(&more, &bare, &a).unwrap();
            assert_eq!(nine_p(&launch(&t).qemu), 1 + 4);
            assert_eq!(saved_as, snapshot_path(&more, &a).unwrap());
            assert_eq!(template_plan(&s, &bare, &a).unwrap().1, path);
            // Another memory size is another machine.
            let mut big = spec(NetworkMode::Proxy);
            big.limits.memory = Some(2 << 30);
            assert_ne!(snapshot_path(&big, &a).unwrap(), path);
        }
    }

    /// Adds `n` writable directory mounts to `s`; the directories live as long as what is returned.
    fn with_writable_mounts(s: &mut SandboxSpec, n: usize) -> Vec<tempfile::TempDir> {
        let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
        for (i, d) in dirs.iter().enumerate() {
            s.mounts.push(MountSpec {
                source: d.path().into(),
                target: format!("/mnt/m{i}").into(),
                writable: true,
            });
        }
        dirs
    }

    #[test]
    fn setting_up_again_discards_a_snapshot_vms_failed_to_start_from() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = assets();
        a.snapshots = Some(dir.path().to_path_buf());
        let s = spec(NetworkMode::Proxy);
        let path = snapshot_path(&s, &a).unwrap();
        std::fs::write(&path, b"machine").unwrap();
        std::fs::write(path.with_extension("json"), r#"{"identity":"q|k|i","bytes":7}"#).unwrap();
        // A whole snapshot nothing failed with is left alone.
        assert!(!crate::vm_snapshot::discard_failed(&s, &a));
        assert!(crate::vm_snapshot::usable(&path));
        std::fs::write(path.with_extension("failed"), "it could not be restored").unwrap();
        assert!(!crate::vm_snapshot::usable(&path));
        assert!(crate::vm_snapshot::discard_failed(&s, &a));
        for gone in [path.clone(), path.with_extension("json"), path.with_extension("failed")] {
            assert!(!gone.exists(), "{} left", gone.display());
        }
        // No failure left to discard; the next VM boots (and the next setup makes it anew).
        assert!(!crate::vm_snapshot::discard_failed(&s, &a));
        assert_eq!(launch(&vm_plan(&s, &a).unwrap().0).boot, Boot::Cold);
    }

    #[test]
    fn more_writable_shares_than_slots_boot_cold() {
        let mut s = spec(NetworkMode::None);
        // The workspace and eight more.
        let _dirs = with_writable_mounts(&mut s, 8);
        let err = snapshot_path(&s, &assets()).unwrap_err();
        assert!(err.contains("more than a snapshot's 8"), "{err}");
        assert_eq!(launch(&vm_plan(&s, &assets()).unwrap().0).boot, Boot::Cold);
    }
}
