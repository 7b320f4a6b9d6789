//! What crosses from the supervisor to the VM: plain data, serialized as JSON.

use std::ffi::OsString;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where the guest reaches the egress proxy: QEMU's user-mode network forwards connections to
/// this address (and `PROXY_PORT`) to a helper that dials the proxy in QEMU's own sandbox.
pub const GUEST_PROXY_ADDR: &str = "10.0.2.100";
pub const GUEST_ADDR: [u8; 4] = [10, 0, 2, 15];
pub const GUEST_NETMASK: [u8; 4] = [255, 255, 255, 0];
/// The virtio-serial port's name, as the guest sees it in /sys/class/virtio-ports/*/name.
pub const PORT_NAME: &str = "agentbox";
/// Inside QEMU's sandbox: the binary, kernel and initramfs (read-only binds).
pub const INFRA_DIR: &str = "/run/agentbox-vm";
/// Inside QEMU's sandbox: its private run directory (channel and exec sockets, console log).
pub const RUN_DIR: &str = "/tmp/.agentbox-vm";
pub const CHANNEL_SOCKET: &str = "/tmp/.agentbox-vm/channel.sock";
pub const EXEC_SOCKET: &str = "/tmp/.agentbox-vm/exec.sock";
/// QEMU's monitor (QMP), which the host uses to pause and resume the VM.
pub const QMP_SOCKET: &str = "/tmp/.agentbox-vm/qmp.sock";
pub const CONSOLE_LOG: &str = "/tmp/.agentbox-vm/console.log";
pub const QEMU_LOG: &str = "/tmp/.agentbox-vm/qemu.log";
/// Inside QEMU's sandbox: the saved machine a VM agent is restored from (a read-only bind).
pub const SNAPSHOT_FILE: &str = "/run/agentbox-vm/snapshot";
/// The numbers of writable share slots a machine can have. A snapshot holds a fixed device
/// layout, so a VM gets the smallest of these that holds its writable shares (`s1`, `s2`, ...;
/// unused ones export an empty, read-only directory the guest never mounts), and each size is a
/// machine of its own. A slot is a virtio-9p device, about 1.2 MiB of QEMU's memory whether
/// used or not, so an agent with a home and a workspace gets two, not eight. An agent
/// with more than the largest boots.
pub const SHARE_SLOTS: [usize; 3] = [2, 4, 8];

/// How many writable share slots a VM with `writable` writable shares gets; `None` if more than
/// any snapshot has.
pub fn share_slots(writable: usize) -> Option<usize> {
    SHARE_SLOTS.iter().copied().find(|&n| n >= writable)
}

/// How `agentbox __vmm` brings the guest up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "boot", rename_all = "snake_case")]
pub enum Boot {
    /// Boot the kernel; the guest agent says Hello once it is up.
    Cold,
    /// Restore the machine at [`SNAPSHOT_FILE`] with QEMU's command line `qemu`. Its guest agent
    /// said Hello before it was saved and waits for the setup. If the restore fails, the guest
    /// is booted cold instead, and the reason is printed.
    Restore { qemu: Vec<String> },
    /// Boot cold, wait for Hello, save the machine to this process's stdout and stop: how a
    /// snapshot is made.
    Template,
}

/// How QEMU runs the guest's CPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "accel", rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualisation through /dev/kvm.
    Kvm,
    /// Software emulation; `reason` says why KVM is not used.
    Tcg { reason: String },
}

impl Accel {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg { .. } => "tcg",
        }
    }
}

/// One filesystem the guest mounts, in order (parents before children). Every target is a path
/// inside the guest's root, which is the host view of QEMU's sandbox shared read-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum GuestMount {
    /// A fresh tmpfs owned by `uid`:`gid`.
    Tmpfs { target: PathBuf, mode: u32, uid: u32, gid: u32 },
    /// A 9p share exported by QEMU under `tag`.
    Share { tag: String, target: PathBuf, writable: bool },
    /// A read-only path of the root share that a tmpfs above would cover: bound back from the
    /// root share's second mount.
    Rebind { target: PathBuf },
}

impl GuestMount {
    pub fn target(&self) -> &PathBuf {
        match self {
            Self::Tmpfs { target, .. } | Self::Share { target, .. } | Self::Rebind { target } => target,
        }
    }
}

/// What the guest agent sets up before it runs anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestSetup {
    pub hostname: String,
    /// The root share's tag.
    pub root_tag: String,
    pub mounts: Vec<GuestMount>,
    /// Configure the network device (proxy mode); without it the guest has none.
    pub network: bool,
    /// Rewritten in every environment value the guest starts a process with: the address the
    /// proxy variables name in the `ns` backend becomes the guest's forward.
    pub proxy_rewrite: Option<(String, String)>,
    /// `pids.max` of the cgroup the guest's processes run in.
    pub pids: Option<u64>,
    /// The host's wall clock when the setup was sent (seconds, nanoseconds since the epoch): a
    /// restored guest's clock is the time its snapshot was made.
    #[serde(default)]
    pub clock: Option<(i64, u32)>,
    /// Fresh random bytes from the host, mixed into the guest kernel's generator, which then
    /// reseeds: guests restored from one snapshot must not share their random numbers.
    #[serde(default)]
    pub entropy: Vec<u8>,
}

/// A process to start in the guest: the agent (session 0) or an `exec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcSpec {
    pub argv: Vec<OsString>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    /// On a terminal of its own (size `rows` x `cols`), or on pipes.
    pub tty: bool,
    pub rows: u16,
    pub cols: u16,
}

/// Everything the host side of the channel (`agentbox __vmm`, inside QEMU's sandbox) needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmLaunch {
    /// QEMU's complete command line for a cold boot, argv[0] first.
    pub qemu: Vec<String>,
    pub boot: Boot,
    pub accel: Accel,
    /// How long to wait for the guest agent before giving up with the console's last lines.
    pub boot_timeout_secs: u64,
    pub setup: GuestSetup,
    pub main: ProcSpec,
}

/// The environment variable that carries [`VmLaunch`] into `agentbox __vmm`.
pub const LAUNCH_ENV: &str = "AGENTBOX_VM_LAUNCH";
/// The environment variable that names the descriptor on which a restoring VM's host says that
/// its snapshot did not start (and which it closes once the guest is up).
pub const REPORT_ENV: &str = "AGENTBOX_VM_REPORT_FD";
