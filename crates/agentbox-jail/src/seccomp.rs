//! The seccomp policy: a deny list of kernel attack surface, applied after setup and before exec.
//!
//! agentbox allows by default and refuses listed calls with an errno, as docker's and flatpak's
//! profiles do: agents run arbitrary toolchains, and an allow list breaks them in ways users cannot
//! diagnose. The list covers what a process with no capabilities could still reach (user
//! namespaces, keyrings, bpf, perf, userfaultfd, io_uring, terminal injection) plus calls that need
//! capabilities we already dropped (defence in depth).
//!
//! Two more checks follow the deny list on x86_64: a guard that refuses the x32 syscall numbers
//! (nr | 0x4000_0000), which a filter written for x86_64 numbers would otherwise let through, and
//! `clone3`, refused with ENOSYS so libc falls back to `clone`, whose flags the filter can inspect
//! (clone3 passes them behind a pointer). seccompiler already kills on a foreign architecture
//! (the 32-bit int 0x80 ABI).
//!
//! seccompiler builds one program per errno, and the guard is a program of its own; they are
//! chained into one before install (each program's "allow" jumps to the next one), because the
//! kernel checks, JIT-compiles and later runs every installed filter separately: three filters
//! cost a sandbox's start about 0.08 ms more than one, and a call no cached verdict covers ran
//! three programs.

use std::collections::BTreeMap;

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde::Serialize;

/// A condition on one syscall argument: `(arg & mask) == value` on the low 32 bits (the kernel
/// truncates `int`/`unsigned int` arguments such as ioctl's request, so high bits must not matter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ArgMatch {
    pub index: u8,
    pub mask: u32,
    pub value: u32,
}

/// Refuse `name` (when every condition holds; always if there are none) with `errno`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DenyRule {
    pub name: &'static str,
    #[serde(skip)]
    pub nr: i64,
    pub when: Vec<ArgMatch>,
    pub errno: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeccompPolicy {
    pub deny: Vec<DenyRule>,
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("unsupported architecture for the seccomp filter")]
    Arch,
    #[error("building the seccomp filter: {0}")]
    Build(String),
    #[error("installing the seccomp filter: {0}")]
    Install(String),
}

macro_rules! always {
    ($($name:ident),* $(,)?) => {
        [$((stringify!($name), libc::$name as i64)),*]
    };
}

/// Namespace flags whose creation must stay impossible inside: a new user namespace would give the
/// agent a full capability set over new mount/net namespaces and a large kernel surface.
const NS_FLAGS: [u32; 8] = [
    libc::CLONE_NEWUSER as u32,
    libc::CLONE_NEWNS as u32,
    libc::CLONE_NEWPID as u32,
    libc::CLONE_NEWNET as u32,
    libc::CLONE_NEWUTS as u32,
    libc::CLONE_NEWIPC as u32,
    libc::CLONE_NEWCGROUP as u32,
    0x80, // CLONE_NEWTIME
];

impl SeccompPolicy {
    /// The policy every sandbox gets.
    pub fn standard() -> Self {
        let eperm = libc::EPERM;
        let mut deny = Vec::new();
        let simple = always![
            // Mount table changes (the sandbox's mounts are final once built).
            SYS_mount,
            SYS_umount2,
            SYS_pivot_root,
            SYS_open_tree,
            SYS_move_mount,
            SYS_fsopen,
            SYS_fsconfig,
            SYS_fsmount,
            SYS_fspick,
            SYS_mount_setattr,
            SYS_chroot,
            // Joining other namespaces.
            SYS_setns,
            // Kernel keyrings are not namespaced by path and hold other processes' secrets.
            SYS_keyctl,
            SYS_add_key,
            SYS_request_key,
            // Large, frequently exploited kernel interfaces.
            SYS_bpf,
            SYS_perf_event_open,
            SYS_userfaultfd,
            SYS_io_uring_setup,
            SYS_io_uring_enter,
            SYS_io_uring_register,
            // Kernel code and system state.
            SYS_kexec_load,
            SYS_kexec_file_load,
            SYS_init_module,
            SYS_finit_module,
            SYS_delete_module,
            SYS_reboot,
            SYS_swapon,
            SYS_swapoff,
            SYS_acct,
            SYS_syslog,
            SYS_settimeofday,
            SYS_clock_settime,
            SYS_clock_adjtime,
            SYS_adjtimex,
            SYS_quotactl,
            SYS_vhangup,
            SYS_personality,
            // File handles bypass the mount-based view ("shocker").
            SYS_open_by_handle_at,
            SYS_name_to_handle_at,
            SYS_fanotify_init,
            SYS_lookup_dcookie,
        ];
        for (name, nr) in simple {
            deny.push(DenyRule { name, nr, when: vec![], errno: eperm });
        }
        #[cfg(target_arch = "x86_64")]
        for (name, nr) in always![SYS_iopl, SYS_ioperm, SYS_uselib, SYS_modify_ldt] {
            deny.push(DenyRule { name, nr, when: vec![], errno: eperm });
        }
        // Terminal injection: TIOCSTI pushes bytes into a terminal's input as if typed, TIOCLINUX
        // can do the same on a virtual console, TIOCSETD switches line disciplines (a history of
        // kernel bugs).
        for (name, req) in [("ioctl(TIOCSTI)", libc::TIOCSTI), ("ioctl(TIOCLINUX)", libc::TIOCLINUX)]
            .into_iter()
            .chain([("ioctl(TIOCSETD)", libc::TIOCSETD)])
        {
            deny.push(DenyRule {
                name,
                nr: libc::SYS_ioctl,
                when: vec![ArgMatch { index: 1, mask: u32::MAX, value: req as u32 }],
                errno: eperm,
            });
        }
        for flag in NS_FLAGS {
            for (name, nr) in
                [("unshare(CLONE_NEW*)", libc::SYS_unshare), ("clone(CLONE_NEW*)", libc::SYS_clone)]
            {
                deny.push(DenyRule {
                    name,
                    nr,
                    when: vec![ArgMatch { index: 0, mask: flag, value: flag }],
                    errno: eperm,
                });
            }
        }
        // Packet sockets see all traffic of the namespace; raw sockets forge it.
        deny.push(DenyRule {
            name: "socket(AF_PACKET)",
            nr: libc::SYS_socket,
            when: vec![ArgMatch { index: 0, mask: u32::MAX, value: libc::AF_PACKET as u32 }],
            errno: eperm,
        });
        deny.push(DenyRule {
            name: "socket(SOCK_RAW)",
            nr: libc::SYS_socket,
            when: vec![ArgMatch { index: 1, mask: 0xf, value: libc::SOCK_RAW as u32 }],
            errno: eperm,
        });
        deny.push(DenyRule { name: "clone3", nr: libc::SYS_clone3, when: vec![], errno: libc::ENOSYS });
        deny.extend(setid_rules());
        Self { deny }
    }

    pub fn denies(&self, name: &str) -> bool {
        self.deny.iter().any(|r| r.name == name)
    }

    /// Compiles the policy into one BPF program.
    pub fn compile(&self) -> Result<BpfProgram, SeccompError> {
        let arch = target_arch()?;
        let mut by_errno: BTreeMap<i32, BTreeMap<i64, Vec<SeccompRule>>> = BTreeMap::new();
        for rule in &self.deny {
            let conditions = rule
                .when
                .iter()
                .map(|m| {
                    let op = if m.mask == u32::MAX {
                        SeccompCmpOp::Eq
                    } else {
                        SeccompCmpOp::MaskedEq(m.mask.into())
                    };
                    SeccompCondition::new(m.index, SeccompCmpArgLen::Dword, op, m.value.into())
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| SeccompError::Build(e.to_string()))?;
            let rules = by_errno.entry(rule.errno).or_default().entry(rule.nr).or_default();
            if !conditions.is_empty() {
                rules.push(SeccompRule::new(conditions).map_err(|e| SeccompError::Build(e.to_string()))?);
            }
        }
        // Chained, the first program to refuse a call decides; stacked, the later one would.
        // With no number under two errnos the two agree (see `chain`).
        let mut numbers = BTreeMap::new();
        for (errno, rules) in &by_errno {
            for nr in rules.keys() {
                if let Some(other) = numbers.insert(*nr, *errno) {
                    return Err(SeccompError::Build(format!(
                        "system call {nr} has rules with errno {other} and {errno}"
                    )));
                }
            }
        }
        let mut programs = Vec::new();
        for (errno, rules) in by_errno {
            let filter =
                SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(errno as u32), arch)
                    .map_err(|e| SeccompError::Build(e.to_string()))?;
            programs.push(BpfProgram::try_from(filter).map_err(|e| SeccompError::Build(e.to_string()))?);
        }
        #[cfg(target_arch = "x86_64")]
        programs.push(x32_guard());
        chain(programs)
    }
}

const BPF_RET_K: u16 = 0x06;
const BPF_JMP_JA: u16 = 0x05;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
/// The kernel's limit on a classic BPF program (BPF_MAXINSNS).
const MAX_INSNS: usize = 4096;

/// One program that runs `programs` in turn: where one would allow the call, it jumps to the
/// start of the next; the first other verdict is the verdict; the last program's allow stands.
///
/// Filters installed one by one would give the verdict of highest precedence instead (and, for
/// two errnos, the later filter's). The two agree because no call is refused by two programs:
/// `compile` checks that no system call number has rules under two errnos, the guard only
/// matches numbers no rule uses, and the only other verdict, killing a foreign architecture, is
/// the first program's first check.
///
/// Each program is checked to end in a return and to jump only within itself (installed alone,
/// the kernel would have refused it otherwise), so a return replaced by a jump of the same
/// length to the end of its program keeps every other jump's target.
fn chain(programs: Vec<BpfProgram>) -> Result<BpfProgram, SeccompError> {
    let count = programs.len();
    let mut out = Vec::with_capacity(programs.iter().map(Vec::len).sum());
    for (i, program) in programs.into_iter().enumerate() {
        let len = program.len();
        self_contained(&program).map_err(|why| SeccompError::Build(format!("filter program {i}: {why}")))?;
        for (at, insn) in program.into_iter().enumerate() {
            let allows = insn.code == BPF_RET_K && insn.k == SECCOMP_RET_ALLOW;
            if allows && i + 1 < count {
                // `ja k` continues at the instruction k after the next one: here, the next program.
                out.push(sock_filter { code: BPF_JMP_JA, jt: 0, jf: 0, k: (len - at - 1) as u32 });
            } else {
                out.push(insn);
            }
        }
    }
    if out.len() > MAX_INSNS {
        return Err(SeccompError::Build(format!(
            "the filter has {} instructions; the kernel takes 1 to {MAX_INSNS}",
            out.len()
        )));
    }
    Ok(out)
}

/// Calls that could leave a set-user-ID or set-group-ID file on the host, with the index of their
/// mode argument. As root the agent's files would be owned by a host account, and even an
/// unprivileged caller's uid is worth stealing: no file made inside may carry either bit. (`mkdir`
/// is not listed: the kernel drops both bits from its mode; a directory gets S_ISGID only by
/// chmod, which is refused, or from a parent that has it.)
const MODE_ARGS: &[(&str, i64, u8)] = &[
    #[cfg(target_arch = "x86_64")]
    ("chmod", libc::SYS_chmod, 1),
    ("fchmod", libc::SYS_fchmod, 1),
    ("fchmodat", libc::SYS_fchmodat, 2),
    ("fchmodat2", libc::SYS_fchmodat2, 2),
    #[cfg(target_arch = "x86_64")]
    ("open", libc::SYS_open, 2),
    ("openat", libc::SYS_openat, 3),
    #[cfg(target_arch = "x86_64")]
    ("creat", libc::SYS_creat, 1),
    #[cfg(target_arch = "x86_64")]
    ("mknod", libc::SYS_mknod, 1),
    ("mknodat", libc::SYS_mknodat, 2),
];

/// The set-id rules: each call in [`MODE_ARGS`] is refused with EPERM when its mode has S_ISUID or
/// S_ISGID, and `openat2`, whose mode travels behind a pointer the filter cannot read, returns
/// ENOSYS so that callers fall back to `openat`.
fn setid_rules() -> Vec<DenyRule> {
    let mut rules = Vec::new();
    for (name, nr, index) in MODE_ARGS {
        for bit in [libc::S_ISUID, libc::S_ISGID] {
            rules.push(DenyRule {
                name: setid_name(name),
                nr: *nr,
                when: vec![ArgMatch { index: *index, mask: bit, value: bit }],
                errno: libc::EPERM,
            });
        }
    }
    rules.push(DenyRule { name: "openat2", nr: libc::SYS_openat2, when: vec![], errno: libc::ENOSYS });
    rules
}

fn setid_name(call: &str) -> &'static str {
    match call {
        "chmod" => "chmod(S_ISUID|S_ISGID)",
        "fchmod" => "fchmod(S_ISUID|S_ISGID)",
        "fchmodat" => "fchmodat(S_ISUID|S_ISGID)",
        "fchmodat2" => "fchmodat2(S_ISUID|S_ISGID)",
        "open" => "open(S_ISUID|S_ISGID)",
        "openat" => "openat(S_ISUID|S_ISGID)",
        "creat" => "creat(S_ISUID|S_ISGID)",
        "mknod" => "mknod(S_ISUID|S_ISGID)",
        _ => "mknodat(S_ISUID|S_ISGID)",
    }
}

fn target_arch() -> Result<TargetArch, SeccompError> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else if cfg!(target_arch = "aarch64") {
        Ok(TargetArch::aarch64)
    } else {
        Err(SeccompError::Arch)
    }
}

/// `if nr >= 0x4000_0000 { ENOSYS } else { ALLOW }`: the x32 ABI shares the x86_64 audit arch, so
/// only the number tells it apart.
#[cfg(target_arch = "x86_64")]
fn x32_guard() -> BpfProgram {
    const LD_W_ABS: u16 = 0x20;
    const JGE_K: u16 = 0x35;
    const RET_K: u16 = 0x06;
    vec![
        sock_filter { code: LD_W_ABS, jt: 0, jf: 0, k: 0 }, // seccomp_data.nr
        sock_filter { code: JGE_K, jt: 0, jf: 1, k: 0x4000_0000 },
        sock_filter { code: RET_K, jt: 0, jf: 0, k: 0x0005_0000 | libc::ENOSYS as u32 }, // SECCOMP_RET_ERRNO
        sock_filter { code: RET_K, jt: 0, jf: 0, k: 0x7fff_0000 },                       // SECCOMP_RET_ALLOW
    ]
}

/// Whether `program` is non-empty, ends in a return, and jumps only to its own instructions.
fn self_contained(program: &[sock_filter]) -> Result<(), String> {
    const BPF_CLASS: u16 = 0x07;
    const BPF_JMP: u16 = 0x05;
    const BPF_OP: u16 = 0xf0;
    const BPF_JA: u16 = 0x00;
    const BPF_RET: u16 = 0x06;
    let last = program.last().ok_or("it is empty")?;
    if last.code & BPF_CLASS != BPF_RET {
        return Err("it does not end in a return".into());
    }
    for (at, insn) in program.iter().enumerate() {
        if insn.code & BPF_CLASS != BPF_JMP {
            continue;
        }
        let targets = if insn.code & BPF_OP == BPF_JA {
            vec![insn.k as usize]
        } else {
            vec![usize::from(insn.jt), usize::from(insn.jf)]
        };
        if targets.iter().any(|k| at + 1 + k >= program.len()) {
            return Err(format!("the jump at {at} leaves it"));
        }
    }
    Ok(())
}

/// Installs a compiled program on the calling thread. Requires no_new_privs (or CAP_SYS_ADMIN).
pub fn install(program: &BpfProgram) -> Result<(), SeccompError> {
    seccompiler::apply_filter(program).map_err(|e| SeccompError::Install(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_the_issue_list() {
        let p = SeccompPolicy::standard();
        for name in [
            "SYS_keyctl",
            "SYS_add_key",
            "SYS_bpf",
            "SYS_perf_event_open",
            "SYS_userfaultfd",
            "SYS_kexec_load",
            "SYS_kexec_file_load",
            "SYS_init_module",
            "SYS_finit_module",
            "SYS_delete_module",
            "SYS_mount",
            "SYS_umount2",
            "SYS_pivot_root",
            "SYS_fsopen",
            "SYS_move_mount",
            "SYS_open_tree",
            "SYS_open_by_handle_at",
            "ioctl(TIOCSTI)",
            "ioctl(TIOCLINUX)",
            "unshare(CLONE_NEW*)",
            "clone3",
            "fchmod(S_ISUID|S_ISGID)",
            "fchmodat(S_ISUID|S_ISGID)",
            "fchmodat2(S_ISUID|S_ISGID)",
            "openat(S_ISUID|S_ISGID)",
            "mknodat(S_ISUID|S_ISGID)",
            "openat2",
        ] {
            assert!(p.denies(name), "{name} missing from the policy");
        }
    }

    #[test]
    fn compiles_into_one_program_that_ends_in_the_last_verdict() {
        let program = SeccompPolicy::standard().compile().unwrap();
        let last = program.last().unwrap();
        assert_eq!((last.code, last.k), (BPF_RET_K, SECCOMP_RET_ALLOW), "the last program's allow ends it");
        // Only the last program's allows remain; every earlier one became a forward jump that
        // lands inside the program.
        for (at, insn) in program.iter().enumerate() {
            if insn.code == BPF_JMP_JA {
                assert!(at + 1 + (insn.k as usize) < program.len(), "jump at {at} leaves the program");
            }
        }
    }

    #[test]
    fn a_call_refused_with_two_errnos_is_not_compiled() {
        // Chained, the first errno would win; stacked, the second: the policy is refused.
        let mut p = SeccompPolicy::standard();
        p.deny.push(DenyRule { name: "bpf again", nr: libc::SYS_bpf, when: vec![], errno: libc::ENOSYS });
        let err = p.compile().unwrap_err().to_string();
        assert!(err.contains(&format!("system call {}", libc::SYS_bpf)), "{err}");
    }

    #[test]
    fn a_program_that_jumps_out_of_itself_or_does_not_return_is_not_chained() {
        let ret = || sock_filter { code: BPF_RET_K, jt: 0, jf: 0, k: SECCOMP_RET_ALLOW };
        let ja = |k| sock_filter { code: BPF_JMP_JA, jt: 0, jf: 0, k };
        let jeq = |jt, jf| sock_filter { code: 0x15, jt, jf, k: 0 };
        assert!(chain(vec![vec![ja(0), ret()], vec![ret()]]).is_ok());
        for bad in [vec![], vec![ja(0)], vec![ja(1), ret()], vec![jeq(0, 1), ret()], vec![jeq(1, 0), ret()]] {
            let shown = format!("{bad:?}");
            assert!(chain(vec![bad, vec![ret()]]).is_err(), "{shown}");
        }
    }

    /// Runs a classic BPF program of the kinds seccompiler and `x32_guard` emit on one
    /// `seccomp_data` (nr, arch, args' low words), returning its verdict.
    fn run(program: &[sock_filter], nr: u32, arch: u32, args: [u32; 6]) -> u32 {
        let word = |k: u32| match k {
            0 => nr,
            4 => arch,
            16..=63 if (k - 16) % 8 == 0 => args[((k - 16) / 8) as usize],
            16..=63 if (k - 16) % 8 == 4 => 0,
            _ => panic!("load of offset {k}"),
        };
        let (mut pc, mut a) = (0usize, 0u32);
        loop {
            let i = &program[pc];
            pc += 1;
            match i.code {
                0x20 => a = word(i.k),                                             // ld [k]
                0x54 => a &= i.k,                                                  // and #k
                0x05 => pc += i.k as usize,                                        // ja
                0x15 => pc += usize::from(if a == i.k { i.jt } else { i.jf }),     // jeq
                0x35 => pc += usize::from(if a >= i.k { i.jt } else { i.jf }),     // jge
                0x25 => pc += usize::from(if a > i.k { i.jt } else { i.jf }),      // jgt
                0x45 => pc += usize::from(if a & i.k != 0 { i.jt } else { i.jf }), // jset
                BPF_RET_K => return i.k,
                c => panic!("instruction {c:#x} at {}", pc - 1),
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_chained_program_gives_each_program_its_verdict() {
        const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
        let program = SeccompPolicy::standard().compile().unwrap();
        let errno = |e: i32| 0x0005_0000 | e as u32;
        let call = |nr: i64, args: [u32; 6]| run(&program, nr as u32, AUDIT_ARCH_X86_64, args);
        // From the EPERM program, the ENOSYS one, the guard, and calls none of them refuses.
        assert_eq!(call(libc::SYS_bpf, [0; 6]), errno(libc::EPERM));
        assert_eq!(call(libc::SYS_fchmod, [3, 0o4755, 0, 0, 0, 0]), errno(libc::EPERM));
        assert_eq!(call(libc::SYS_fchmod, [3, 0o755, 0, 0, 0, 0]), SECCOMP_RET_ALLOW);
        assert_eq!(call(libc::SYS_clone3, [0; 6]), errno(libc::ENOSYS));
        assert_eq!(call(libc::SYS_openat2, [0; 6]), errno(libc::ENOSYS));
        assert_eq!(call(libc::SYS_read | 0x4000_0000, [0; 6]), errno(libc::ENOSYS));
        assert_eq!(call(libc::SYS_read, [0; 6]), SECCOMP_RET_ALLOW);
        assert_eq!(call(libc::SYS_openat, [0, 0, 0o101, 0o644, 0, 0]), SECCOMP_RET_ALLOW);
        // A foreign architecture is killed by the first program, before any chaining.
        assert_ne!(run(&program, 0, 0x4000_0003, [0; 6]) & 0xffff_0000, SECCOMP_RET_ALLOW);
    }
}
