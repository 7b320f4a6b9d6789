//! QEMU's command line, built as data from what the VM needs.
//!
//! - Machine: `microvm` (no PCI, no firmware, virtio-mmio devices described by ACPI). With KVM
//!   it runs on the host CPU model with the in-kernel timers; under software emulation (TCG) the
//!   legacy PIT/PIC/RTC are switched on, because a distribution kernel calibrates its clock
//!   against them and otherwise stalls at boot.
//! - Filesystems: 9p (`virtio-9p-device`), served by QEMU itself. virtiofs would need a separate
//!   daemon per share (another privileged helper outside QEMU's sandbox) and guest memory shared
//!   with it; 9p needs neither, and QEMU runs inside an `ns` sandbox whose filesystem view is
//!   exactly what the guest may see. `security_model=none` makes guest writes land as the user
//!   who runs agentbox, and `multidevs=remap` keeps inode numbers unique across the host mounts
//!   inside one share.
//! - Network: user-mode (slirp) with `restrict=on`, so the guest reaches nothing, plus one
//!   `guestfwd` that hands each connection to the proxy address to `agentbox __vmfwd`, which dials
//!   the supervisor's proxy on the sandbox's loopback. `none` adds no network device at all.

use std::path::PathBuf;

use agentbox_core::PROXY_PORT;

use crate::config::{Accel, CHANNEL_SOCKET, CONSOLE_LOG, GUEST_PROXY_ADDR, PORT_NAME, QMP_SOCKET};

/// A directory QEMU exports to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub tag: String,
    /// The directory as QEMU sees it (inside its sandbox).
    pub path: PathBuf,
    pub writable: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QemuConfig {
    pub binary: PathBuf,
    pub accel: Accel,
    pub memory_mib: u64,
    pub cpus: u32,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub shares: Vec<Share>,
    /// Add the network device whose only way out is the forward to the proxy.
    pub proxy_forward: bool,
    /// Under TCG, the guest's TSC frequency, given so the kernel skips calibrating it: a
    /// microvm has no HPET or PM timer to calibrate against, and calibrating against the PIT
    /// fails (and the boot stalls) whenever the host is busy.
    pub tsc_khz: u64,
    /// Boot the kernel locked down ([`LOCKDOWN_PARAM`]).
    pub lockdown: bool,
    /// The program QEMU runs for each forwarded connection (argv, joined with spaces; QEMU splits
    /// it like a shell would, so no element may contain a space).
    pub forward_command: Vec<String>,
}

/// How QEMU starts the machine; see [`QemuConfig::argv`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Boot the kernel.
    Boot,
    /// Boot the kernel to make a snapshot: the guest agent zeroes its free memory before it
    /// says Hello, so the saved machine holds only the pages in use.
    Template,
    /// Load a saved machine from descriptor 0 (`-incoming fd:0`). No kernel or initramfs: they
    /// would only be read into memory the snapshot then replaces.
    Restore,
}

/// The kernel parameter that makes the guest agent prepare for a snapshot.
pub const TEMPLATE_PARAM: &str = "agentbox.template";

/// Bumped when what a snapshot holds changes in a way its key does not show.
const SNAPSHOT_FORMAT: u32 = 1;

/// The kernel command line: quiet boot, the console on the serial port (its log is shown when a
/// boot fails), and a panic powers the machine off instead of hanging it.
pub const KERNEL_CMDLINE: &str = "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init";

/// Added to the kernel command line when the image's modules are signed (Debian's are), since
/// a locked-down kernel loads no other: root in the guest (`--uid 0`) stays out of the guest
/// kernel's memory (/proc/kcore, /dev/mem, kprobes, BPF reads, unsigned modules), and as tracefs
/// is part of it, the 6.1 kernel does not build its 10,000 trace event files: 8 MiB less in
/// every guest.
pub const LOCKDOWN_PARAM: &str = "lockdown=confidentiality";

/// The host's CPU clock in kHz (emulated TSC reads follow the host's), from /proc/cpuinfo.
pub fn host_tsc_khz() -> u64 {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("cpu MHz"))
                .and_then(|l| l.split(':').nth(1))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .map(|mhz| (mhz * 1000.0) as u64)
        .filter(|k| *k > 0)
        .unwrap_or(2_000_000)
}

/// TCG's translation cache: QEMU's default (1 GiB) would count against the sandbox's memory.
const TCG_TB_MIB: u32 = 64;

impl QemuConfig {
    /// The key of the snapshot this machine can be restored from: what the saved machine
    /// depends on (the device layout, memory, CPUs, accelerator, kernel command line) and
    /// `identity` (which QEMU, kernel and initramfs), but not where the shares lead, which is
    /// host-side and told to the guest after the restore.
    pub fn snapshot_key(&self, identity: &str) -> String {
        use std::hash::{Hash, Hasher};
        let mut generic = self.clone();
        for s in &mut generic.shares {
            s.path = PathBuf::new();
            s.writable = false;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (SNAPSHOT_FORMAT, generic.argv(Start::Template), identity).hash(&mut h);
        format!("{:016x}", h.finish())
    }

    /// QEMU's command line, argv[0] first.
    pub fn argv(&self, start: Start) -> Vec<String> {
        let mut a: Vec<String> = vec![self.binary.to_string_lossy().into_owned()];
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        push(&["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"]);
        match &self.accel {
            Accel::Kvm => push(&["-machine", "microvm", "-accel", "kvm", "-cpu", "host"]),
            Accel::Tcg { .. } => {
                let tcg = format!("tcg,thread=multi,tb-size={TCG_TB_MIB}");
                push(&["-machine", "microvm,pit=on,pic=on,rtc=on", "-accel", &tcg, "-cpu", "max"]);
            }
        }
        let mem = self.memory_mib.to_string();
        let smp = self.cpus.max(1).to_string();
        let kernel = self.kernel.to_string_lossy().into_owned();
        let initrd = self.initramfs.to_string_lossy().into_owned();
        let mut cmdline = KERNEL_CMDLINE.to_string();
        if self.lockdown {
            cmdline = format!("{cmdline} {LOCKDOWN_PARAM}");
        }
        if let Accel::Tcg { .. } = &self.accel {
            cmdline = format!("{cmdline} tsc_early_khz={}", self.tsc_khz);
        }
        if start == Start::Template {
            cmdline = format!("{cmdline} {TEMPLATE_PARAM}");
        }
        push(&["-m", &mem, "-smp", &smp]);
        match start {
            Start::Boot | Start::Template => {
                push(&["-kernel", &kernel, "-initrd", &initrd, "-append", &cmdline]);
            }
            Start::Restore => push(&["-incoming", "fd:0"]),
        }
        let serial = format!("file:{CONSOLE_LOG}");
        push(&["-serial", &serial]);
        let chardev = format!("socket,id=channel,path={CHANNEL_SOCKET},server=on,wait=off");
        let port = format!("virtserialport,chardev=channel,name={PORT_NAME}");
        push(&["-chardev", &chardev, "-device", "virtio-serial-device", "-device", &port]);
        // Free page reporting: memory the guest frees goes back to the host (QEMU discards the
        // pages it is told of), instead of staying in QEMU's RSS for as long as the VM runs.
        push(&["-device", "virtio-balloon-device,free-page-reporting=on"]);
        // The monitor, through which the host pauses and resumes the guest.
        let qmp = format!("unix:{QMP_SOCKET},server=on,wait=off");
        push(&["-qmp", &qmp]);
        for (i, s) in self.shares.iter().enumerate() {
            let fsdev = format!(
                "local,id=fs{i},path={},security_model=none,multidevs=remap,readonly={}",
                s.path.display(),
                if s.writable { "off" } else { "on" }
            );
            let dev = format!("virtio-9p-device,fsdev=fs{i},mount_tag={}", s.tag);
            push(&["-fsdev", &fsdev, "-device", &dev]);
        }
        if self.proxy_forward {
            let netdev = format!(
                "user,id=net0,restrict=on,guestfwd=tcp:{GUEST_PROXY_ADDR}:{PROXY_PORT}-cmd:{}",
                self.forward_command.join(" ")
            );
            push(&["-netdev", &netdev, "-device", "virtio-net-device,netdev=net0"]);
        } else {
            push(&["-nic", "none"]);
        }
        a
    }
}

/// The kernel modules a guest needs, by name; `modules::resolve` adds their dependencies.
pub const GUEST_MODULES: &[&str] =
    &["virtio_mmio", "virtio_console", "9pnet_virtio", "9p", "virtio_net", "virtio_balloon"];

#[cfg(test)]
mod tests {
    use super::*;

    fn config(accel: Accel, proxy: bool) -> QemuConfig {
        QemuConfig {
            binary: "/usr/bin/qemu-system-x86_64".into(),
            accel,
            memory_mib: 512,
            cpus: 2,
            kernel: "/run/agentbox-vm/vmlinuz".into(),
            initramfs: "/run/agentbox-vm/initramfs".into(),
            shares: vec![
                Share { tag: "root".into(), path: "/".into(), writable: false },
                Share { tag: "s1".into(), path: "/work/p".into(), writable: true },
            ],
            proxy_forward: proxy,
            tsc_khz: 2_300_000,
            lockdown: true,
            forward_command: vec!["/run/agentbox-vm/agentbox".into(), "__vmfwd".into()],
        }
    }

    fn joined(c: &QemuConfig) -> String {
        c.argv(Start::Boot).join(" ")
    }

    #[test]
    fn tcg_gets_legacy_timers_and_a_small_translation_cache() {
        let s = joined(&config(Accel::Tcg { reason: "x".into() }, false));
        assert!(
            s.contains("-machine microvm,pit=on,pic=on,rtc=on -accel tcg,thread=multi,tb-size=64"),
            "{s}"
        );
        assert!(s.contains("-m 512 -smp 2"), "{s}");
        assert!(s.contains("panic=-1 rdinit=/init lockdown=confidentiality tsc_early_khz=2300000"), "{s}");
        let k = joined(&config(Accel::Kvm, false));
        assert!(k.contains("-machine microvm -accel kvm -cpu host"), "{k}");
        assert!(k.contains("rdinit=/init lockdown=confidentiality -serial"), "{k}");
        // An image with unsigned modules: a locked-down kernel would refuse them.
        let mut open = config(Accel::Kvm, false);
        open.lockdown = false;
        assert!(joined(&open).contains("rdinit=/init -serial"), "{}", joined(&open));
        assert!(!k.contains("tsc_early_khz"), "{k}");
    }

    #[test]
    fn shares_are_read_only_unless_writable() {
        let s = joined(&config(Accel::Kvm, false));
        assert!(s.contains("path=/,security_model=none,multidevs=remap,readonly=on"), "{s}");
        assert!(s.contains("path=/work/p,security_model=none,multidevs=remap,readonly=off"), "{s}");
        assert!(s.contains("mount_tag=s1"), "{s}");
    }

    #[test]
    fn no_network_device_without_proxy() {
        let none = config(Accel::Kvm, false).argv(Start::Boot);
        assert!(!none.iter().any(|a| a.contains("netdev")), "{none:?}");
        assert!(none.windows(2).any(|w| w == ["-nic", "none"]));
        let proxy = joined(&config(Accel::Kvm, true));
        assert!(
            proxy.contains(
                "user,id=net0,restrict=on,guestfwd=tcp:10.0.2.100:3128-cmd:/run/agentbox-vm/agentbox __vmfwd"
            ),
            "{proxy}"
        );
        assert_eq!(proxy.matches("-netdev").count(), 1);
    }

    #[test]
    fn a_restore_loads_the_machine_instead_of_a_kernel_with_kvm_and_without() {
        for accel in [Accel::Kvm, Accel::Tcg { reason: "x".into() }] {
            let c = config(accel.clone(), true);
            let restore = c.argv(Start::Restore);
            assert!(restore.windows(2).any(|w| w == ["-incoming", "fd:0"]), "{restore:?}");
            for flag in ["-kernel", "-initrd", "-append"] {
                assert!(!restore.iter().any(|a| a == flag), "{flag} in {restore:?}");
            }
            let template = c.argv(Start::Template).join(" ");
            assert!(template.contains("rdinit=/init") && template.contains(TEMPLATE_PARAM), "{template}");
            assert!(!c.argv(Start::Boot).join(" ").contains(TEMPLATE_PARAM));
            // Apart from how the machine starts, the devices are the same: what a snapshot needs.
            let strip = |a: Vec<String>| {
                let mut out = Vec::new();
                let mut it = a.into_iter();
                while let Some(x) = it.next() {
                    if ["-kernel", "-initrd", "-append", "-incoming"].contains(&x.as_str()) {
                        it.next();
                    } else {
                        out.push(x);
                    }
                }
                out
            };
            assert_eq!(strip(c.argv(Start::Template)), strip(c.argv(Start::Restore)));
            if accel == Accel::Kvm {
                assert!(restore.join(" ").contains("-machine microvm -accel kvm -cpu host"), "{restore:?}");
            }
        }
    }

    #[test]
    fn the_snapshot_key_follows_the_machine_not_where_its_shares_lead() {
        let a = config(Accel::Tcg { reason: "x".into() }, true);
        let mut b = a.clone();
        b.shares[1].path = "/elsewhere".into();
        b.shares[1].writable = false;
        assert_eq!(a.snapshot_key("q1"), b.snapshot_key("q1"));
        assert_ne!(a.snapshot_key("q1"), a.snapshot_key("q2"), "another QEMU, kernel or initramfs");
        let mut c = a.clone();
        c.memory_mib = 1024;
        assert_ne!(a.snapshot_key("q1"), c.snapshot_key("q1"));
        let mut d = a.clone();
        d.proxy_forward = false;
        assert_ne!(a.snapshot_key("q1"), d.snapshot_key("q1"));
        let mut e = a.clone();
        e.cpus = 1;
        assert_ne!(a.snapshot_key("q1"), e.snapshot_key("q1"));
        assert_ne!(a.snapshot_key("q1"), config(Accel::Kvm, true).snapshot_key("q1"));
    }
}
