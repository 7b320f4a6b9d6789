//! Threat model row "the kernel": namespaces, mounts, modules, bpf, keyrings and friends.

use crate::support::*;

const KERNEL_ATTACKS: &[&str] = &[
    "mount",
    "umount",
    "unshare-user",
    "unshare-net",
    "unshare-mount",
    "clone3-user",
    "chroot",
    "module",
    "kexec",
    "bpf",
    "perf",
    "userfaultfd",
    "keyctl",
    "add-key",
    "open-by-handle",
    "io-uring",
    "raw-socket",
    "packet-socket",
    "setuid-root",
    #[cfg(target_arch = "x86_64")]
    "x32",
];

#[test]
fn kernel_attack_surface_is_refused() {
    for who in modes() {
        for attack_name in KERNEL_ATTACKS {
            assert_blocked(who, &attack(who, &[], &[attack_name]));
        }
    }
}

#[test]
fn no_capabilities_no_new_privileges_and_seccomp() {
    for who in modes() {
        let ws = workspace(who);
        let out = run_in(
            who,
            &ws,
            &[],
            &["grep", "-E", "^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):", "/proc/self/status"],
        );
        let status = text(&out.stdout);
        for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert!(status.contains(&format!("{cap}:\t0000000000000000")), "as {who:?}: {status}");
        }
        assert!(status.contains("NoNewPrivs:\t1"), "as {who:?}: {status}");
        assert!(status.contains("Seccomp:\t2"), "as {who:?}: {status}");
    }
}

#[test]
fn uid_zero_inside_gains_nothing() {
    for who in modes() {
        let out = attack(who, &["--uid", "0", "--gid", "0"], &["read", "/etc/shadow"]);
        assert_blocked(who, &out);
        assert_blocked(who, &attack(who, &["--uid", "0", "--gid", "0"], &["mount"]));
        assert_blocked(who, &attack(who, &["--uid", "0", "--gid", "0"], &["write", "/etc/passwd"]));
    }
}
