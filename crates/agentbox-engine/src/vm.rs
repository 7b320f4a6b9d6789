//! The VM backend's host-side resources: the guest image and initramfs, the accelerator.

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
