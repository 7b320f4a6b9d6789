//! The microVM backend (`--backend vm`).
//!
//! QEMU runs as the command of an ordinary `ns` sandbox built from the agent's own spec, so the
//! filesystem QEMU can see is exactly what the agent may see, and the sandbox's loopback proxy
//! listener is the guest's only way out. Inside, the guest kernel boots an initramfs whose init
//! is this same agentbox binary ([`guest`]), which mounts the shares, starts the agent and talks
//! to the host side ([`host`]) over one virtio-serial channel ([`frame`]).
//!
//! - [`image`] / [`fetch`] / [`modules`] / [`cpio`]: the guest kernel, its modules and the initramfs;
//! - [`accel`]: KVM when it works, software emulation otherwise, decided by a probe boot;
//! - [`qemu`]: QEMU's command line as data.

pub mod accel;
mod config;
pub mod cpio;
mod error;
pub mod exec_client;
pub mod fetch;
pub mod frame;
pub mod fwd;
pub mod guest;
pub mod host;
pub mod image;
pub mod modules;
pub mod monitor;
pub mod qemu;

pub use config::{
    share_slots, Accel, Boot, GuestMount, GuestSetup, ProcSpec, VmLaunch, CHANNEL_SOCKET, CONSOLE_LOG,
    EXEC_SOCKET, GUEST_PROXY_ADDR, INFRA_DIR, LAUNCH_ENV, REPORT_ENV, RUN_DIR, SHARE_SLOTS, SNAPSHOT_FILE,
};
pub use error::VmError;
pub use image::GuestImage;
