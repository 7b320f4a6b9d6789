//! The VM backend's host-side resources: the guest image and initramfs, the accelerator, and
//! the saved machines VM agents start from.

use agentbox_core::{Backend, NetworkMode, SandboxSpec};
use agentbox_jail::{resolve, HostContext, SandboxRequest};
use agentbox_supervisor::vm_snapshot::Made;
use agentbox_supervisor::VmAssets;
use agentbox_vm::GuestImage;

use crate::error::Result;
use crate::home::{vm_image_dir, Home};

/// The guest image, initramfs and accelerator for a VM agent of `home`.
pub fn assets(home: &Home) -> Result<VmAssets> {
    Ok(VmAssets::resolve(&vm_image_dir()?, &home.vm_work_dir())?)
}

/// Refuses early (before anything is created) when VMs cannot start here.
pub fn check_ready() -> Result<()> {
    GuestImage::load(&vm_image_dir()?)?;
    agentbox_vm::accel::qemu_binary()?;
    Ok(())
}

/// What the person is told while the first VM of a machine layout waits for its snapshot.
pub const MAKING_SNAPSHOT: &str =
    "the first VM of this machine layout boots once and saves the machine; later ones start from it";

/// Makes sure the snapshot `spec`'s VM starts from exists, making it now if not: the first VM of
/// a machine layout after `vm setup` or an upgrade waits for one boot, and every later one is
/// restored. Says what happened in a line, or `None` if the snapshot was there. Not being able
/// to make one is not fatal: the VM then boots, and the line says why. `making` is called when
/// the VM is going to wait for its snapshot (see `ensure_snapshot`).
pub fn prepare_snapshot(spec: &SandboxSpec, assets: &VmAssets, making: &mut dyn FnMut()) -> Option<String> {
    match agentbox_supervisor::ensure_snapshot(spec, assets, making) {
        Ok(Some(made)) => Some(made.to_string()),
        Ok(None) => None,
        Err(e) => Some(format!("no VM snapshot ({e}); the VM boots instead")),
    }
}

/// Makes the snapshots of the default machines (`vm setup`): default memory and CPUs, without
/// a network and with the egress proxy's. A failure remembered for one (to make it, or to start
/// from it) is not waited out: asked to set up, it makes the snapshot again.
pub fn make_default_snapshots(home: &Home) -> Result<Vec<std::result::Result<Option<Made>, String>>> {
    let assets = assets(home)?;
    let scratch = home.vm_work_dir().join(format!(".setup-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let mut out = Vec::new();
    for network in [NetworkMode::None, NetworkMode::Proxy] {
        let request = SandboxRequest {
            command: vec!["true".into()],
            workspace: Some(scratch.clone()),
            network,
            backend: Backend::Vm,
            ..Default::default()
        };
        let made = resolve(request, &HostContext::current()?).map_err(|e| e.to_string()).and_then(|spec| {
            agentbox_supervisor::vm_snapshot::discard_failed(&spec, &assets);
            agentbox_supervisor::ensure_snapshot(&spec, &assets, &mut || {})
        });
        out.push(made);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(out)
}
