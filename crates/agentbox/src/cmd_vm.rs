//! `agentbox vm setup|status` and the `__vmm` role.

use std::time::Duration;

use agentbox_vm::fetch::{self, Progress};
use agentbox_vm::{Accel, GuestImage, VmLaunch, LAUNCH_ENV};
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{VmArgs, VmCommand, VmSetupArgs, VmStatusArgs};
use agentbox_engine::home::{vm_image_dir, Home};

/// The host side of a VM, as the command of QEMU's sandbox.
pub fn host_role() -> i32 {
    let launch = std::env::var(LAUNCH_ENV)
        .map_err(|e| e.to_string())
        .and_then(|j| serde_json::from_str::<VmLaunch>(&j).map_err(|e| e.to_string()));
    match launch {
        Ok(l) => agentbox_vm::host::run_host(l),
        Err(e) => {
            eprintln!("agentbox: __vmm needs {LAUNCH_ENV}: {e}");
            agentbox_vm::host::VM_FAILED
        }
    }
}

pub fn vm(args: VmArgs) -> Result<i32> {
    match args.command {
        VmCommand::Setup(a) => setup(a),
        VmCommand::Status(a) => status(a),
    }
}

fn setup(args: VmSetupArgs) -> Result<i32> {
    let dir = vm_image_dir()?;
    let image = match &args.kernel {
        Some(k) => fetch::setup_from_path(&dir, k, args.modules.as_deref())?,
        None => {
            let bar = ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(120));
            bar.set_message("resolving the kernel package");
            let mut on = |p: Progress| match p {
                Progress::Resolved { package, version, size } => {
                    bar.set_length(size);
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    bar.set_message(format!("{package} {version}"));
                }
                Progress::Downloaded(n) => bar.set_position(n),
                Progress::Unpacking => bar.set_message("unpacking"),
            };
            let image = fetch::setup_from_package(&dir, args.package.as_deref(), &mut on);
            bar.finish_and_clear();
            image?
        }
    };
    println!("guest kernel: {} ({} modules) in {}", image.source, image.modules.len(), dir.display());
    let home = Home::open()?;
    eprintln!("agentbox: checking whether KVM can boot it (software emulation is used if not)...");
    let a = agentbox_engine::vm::assets(&home).context("preparing the guest")?;
    println!("accelerator: {}", describe(&a.accel));
    eprintln!("agentbox: booting the guest once to save the machine VM agents start from...");
    for made in agentbox_engine::vm::make_default_snapshots(&home)? {
        match made {
            Ok(Some(m)) => println!("{m}"),
            Ok(None) => println!("snapshot: up to date"),
            Err(e) => eprintln!("agentbox: warning: no snapshot ({e}); VM agents boot instead"),
        }
    }
    Ok(0)
}

pub fn describe(accel: &Accel) -> String {
    match accel {
        Accel::Kvm => "kvm (hardware virtualisation)".into(),
        Accel::Tcg { reason } => format!("tcg (software emulation: {reason})"),
    }
}

fn status(args: VmStatusArgs) -> Result<i32> {
    let dir = vm_image_dir()?;
    let image = GuestImage::load(&dir);
    let qemu = agentbox_vm::accel::qemu_binary();
    let assets = match (&image, &qemu) {
        (Ok(_), Ok(_)) => Some(agentbox_engine::vm::assets(&Home::open()?)?),
        _ => None,
    };
    let accel = assets.as_ref().map(|a| a.accel.clone());
    // The saved machines VM agents start from (`KEY.state`), with their sizes.
    let snapshots: Vec<(std::path::PathBuf, u64)> = assets
        .as_ref()
        .and_then(|a| a.snapshots.as_ref())
        .and_then(|d| std::fs::read_dir(d).ok())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "state"))
        .map(|p| {
            let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            (p, len)
        })
        .collect();
    if args.json {
        let v = serde_json::json!({
            "image_dir": dir,
            "kernel": image.as_ref().ok().map(|i| &i.source),
            "modules": image.as_ref().ok().map(|i| i.modules.len()),
            "qemu": qemu.as_ref().ok(),
            "accel": accel.as_ref().map(|a| a.name()),
            "reason": match &accel { Some(Accel::Tcg { reason }) => Some(reason.clone()), _ => None },
            "ready": accel.is_some(),
            "snapshots": snapshots.iter().map(|(p, n)| serde_json::json!({"path": p, "bytes": n})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(if accel.is_some() { 0 } else { 1 });
    }
    match &image {
        Ok(i) => println!("guest kernel: {} ({} modules) in {}", i.source, i.modules.len(), dir.display()),
        Err(e) => println!("guest kernel: {e}"),
    }
    match &qemu {
        Ok(q) => println!("qemu: {}", q.display()),
        Err(e) => println!("qemu: {e}"),
    }
    if let Some(a) = &accel {
        println!("accelerator: {}", describe(a));
        let total: u64 = snapshots.iter().map(|(_, n)| n).sum();
        match snapshots.first().and_then(|(p, _)| p.parent()) {
            Some(dir) => {
                println!("snapshots: {} ({} MiB) in {}", snapshots.len(), total >> 20, dir.display())
            }
            None => println!("snapshots: none yet (the first VM agent of a machine layout makes its own)"),
        }
    }
    Ok(if accel.is_some() { 0 } else { 1 })
}

/// The `doctor` line for `--backend vm`: which accelerator and why, or what is missing. Not
/// being set up is a warning: the `ns` backend does not need it.
pub fn doctor_check() -> agentbox_jail::Check {
    use agentbox_jail::{Check, Status};
    let warn = |detail: String, fix: &str| Check {
        name: "vm backend",
        status: Status::Warn,
        detail,
        fix: Some(fix.to_string()),
    };
    let dir = match vm_image_dir() {
        Ok(d) => d,
        Err(e) => return warn(format!("{e:#}"), "set HOME or AGENTBOX_CACHE_DIR"),
    };
    if let Err(e) = agentbox_vm::accel::qemu_binary() {
        return warn(e.to_string(), "apt-get install qemu-system-x86");
    }
    if let Err(e) = GuestImage::load(&dir) {
        return warn(e.to_string(), "agentbox vm setup");
    }
    match Home::open().and_then(|h| agentbox_engine::vm::assets(&h)) {
        Ok(a) => Check { name: "vm backend", status: Status::Ok, detail: describe(&a.accel), fix: None },
        Err(e) => warn(format!("{e:#}"), "agentbox vm setup"),
    }
}
