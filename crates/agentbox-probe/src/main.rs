//! Test-only attacker for the agentbox attack suite. Never shipped.
//!
//! `agentbox-probe ATTACK [ARGS]` tries one thing a sandboxed agent must not be able to do and
//! prints one line: `BLOCKED: <why>` (exit 0) when the attempt failed, `ESCAPED: <what>` (exit 1)
//! when it succeeded. Measuring probes (`fork-bomb`, `memory-hog`) print what they achieved.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;

use agentbox_sys::probe;
use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn verdict(attempt: nix::Result<()>, what: &str) -> ExitCode {
    match attempt {
        Ok(()) => {
            println!("ESCAPED: {what}");
            ExitCode::from(1)
        }
        Err(e) => {
            println!("BLOCKED: {what}: {e}");
            ExitCode::SUCCESS
        }
    }
}

fn io(r: std::io::Result<()>) -> nix::Result<()> {
    r.map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

fn arg(args: &[String], i: usize) -> &str {
    args.get(i).map(String::as_str).unwrap_or_else(|| {
        eprintln!("agentbox-probe: missing argument {i}");
        std::process::exit(2)
    })
}

fn pid(s: &str) -> Pid {
    Pid::from_raw(s.parse().unwrap_or_else(|_| std::process::exit(2)))
}

fn fork_bomb(max: usize) -> ExitCode {
    let mut children = Vec::new();
    let mut last_err = String::new();
    let one = agentbox_sys::SingleThreaded::check();
    for _ in 0..max {
        let Ok(one) = &one else { break };
        match agentbox_sys::fork_process(one) {
            Ok(agentbox_sys::Child::Child) => {
                std::thread::sleep(std::time::Duration::from_secs(30));
                agentbox_sys::exit_now(0)
            }
            Ok(agentbox_sys::Child::Parent(p)) => children.push(p),
            Err(e) => {
                last_err = e.to_string();
                break;
            }
        }
    }
    println!("FORKED {} {last_err}", children.len());
    for c in &children {
        let _ = kill(*c, Signal::SIGKILL);
    }
    ExitCode::SUCCESS
}

fn memory_hog(mib: usize) -> ExitCode {
    const CHUNK: usize = 4 << 20;
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut out = std::io::stdout();
    for i in 0..mib / 4 {
        let mut v: Vec<u8> = Vec::new();
        if let Err(e) = v.try_reserve_exact(CHUNK) {
            println!("BLOCKED: allocation refused after {} MiB: {e}", i * 4);
            return ExitCode::SUCCESS;
        }
        v.resize(CHUNK, 1);
        held.push(v);
        let _ = writeln!(out, "ALLOCATED {}", (i + 1) * 4);
        let _ = out.flush();
    }
    println!("ESCAPED: allocated {mib} MiB");
    ExitCode::from(1)
}

/// Every way of leaving a set-user-ID or set-group-ID file at `dir/NAME`: chmod, fchmod,
/// fchmodat, fchmodat2, open/openat/creat with the bits in the mode, mknod. Escaped if any of
/// them produced a file with either bit.
fn setid_file(dir: &str) -> ExitCode {
    use nix::sys::stat::{fchmod, fchmodat, mknod, FchmodatFlags, Mode, SFlag};
    use std::os::unix::fs::PermissionsExt;
    let base = std::path::Path::new(dir);
    let setid = Mode::from_bits_truncate(0o6755);
    let mut made = Vec::new();
    let file = |name: &str| {
        let p = base.join(name);
        let _ = std::fs::write(&p, b"#!/bin/sh\n");
        p
    };
    let p = file("chmod");
    let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o6755));
    made.push(p);
    let p = file("fchmod");
    if let Ok(f) = std::fs::File::open(&p) {
        let _ = fchmod(&f, setid);
    }
    made.push(p);
    let p = file("fchmodat");
    let _ = fchmodat(nix::fcntl::AT_FDCWD, &p, setid, FchmodatFlags::FollowSymlink);
    made.push(p);
    let p = file("fchmodat2");
    let _ = probe::fchmodat2(&p, 0o6755);
    made.push(p);
    for (name, flags) in
        [("open", libc::O_CREAT | libc::O_WRONLY), ("creat", libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC)]
    {
        let p = base.join(name);
        let _ = nix::fcntl::open(&p, nix::fcntl::OFlag::from_bits_truncate(flags), setid);
        made.push(p);
    }
    let p = base.join("mknod");
    let _ = mknod(&p, SFlag::S_IFREG, setid, 0);
    made.push(p);
    let p = base.join("setgid-dir");
    let _ = std::fs::create_dir(&p);
    let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o2775));
    made.push(p);
    let bad: Vec<String> = made
        .iter()
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.permissions().mode() & 0o6000 != 0))
        .map(|p| p.display().to_string())
        .collect();
    if bad.is_empty() {
        println!("BLOCKED: no set-id file could be made");
        ExitCode::SUCCESS
    } else {
        println!("ESCAPED: set-id files {}", bad.join(" "));
        ExitCode::from(1)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let attack = arg(&args, 1);
    match attack {
        "read" => {
            let p = arg(&args, 2);
            let r = std::fs::File::open(p).and_then(|mut f| {
                let mut s = Vec::new();
                f.read_to_end(&mut s).map(drop)
            });
            verdict(io(r), &format!("read {p}"))
        }
        "write" => {
            let p = arg(&args, 2);
            verdict(io(std::fs::write(p, b"pwned by agentbox-probe\n")), &format!("write {p}"))
        }
        "link" => {
            let (from, to) = (arg(&args, 2), arg(&args, 3));
            verdict(io(std::fs::hard_link(from, to)), &format!("hard link {from} -> {to}"))
        }
        "kill" => verdict(kill(pid(arg(&args, 2)), None), "signal a process"),
        "ptrace" => {
            let p = pid(arg(&args, 2));
            let r = nix::sys::ptrace::attach(p);
            if r.is_ok() {
                let _ = nix::sys::ptrace::detach(p, None);
            }
            verdict(r, &format!("ptrace attach {p}"))
        }
        "connect-tcp" => {
            let a = arg(&args, 2);
            let r = std::net::TcpStream::connect_timeout(
                &a.parse().unwrap_or_else(|_| std::process::exit(2)),
                std::time::Duration::from_secs(3),
            );
            verdict(io(r.map(drop)), &format!("connect tcp {a}"))
        }
        "connect-unix" => {
            let p = arg(&args, 2);
            verdict(io(std::os::unix::net::UnixStream::connect(p).map(drop)), &format!("connect unix {p}"))
        }
        "connect-abstract" => {
            let name = arg(&args, 2);
            let r = nix::sys::socket::socket(
                nix::sys::socket::AddressFamily::Unix,
                nix::sys::socket::SockType::Stream,
                nix::sys::socket::SockFlag::empty(),
                None,
            )
            .and_then(|s| {
                let addr = nix::sys::socket::UnixAddr::new_abstract(name.as_bytes())?;
                nix::sys::socket::connect(std::os::fd::AsRawFd::as_raw_fd(&s), &addr)
            });
            verdict(r, &format!("connect abstract @{name}"))
        }
        "tiocsti" => verdict(probe::tiocsti(std::io::stdin().as_fd(), b'x'), "TIOCSTI on stdin"),
        "tiocsti-high" => {
            verdict(probe::tiocsti_high_bits(std::io::stdin().as_fd(), b'x'), "TIOCSTI with high bits")
        }
        "tiocsti-tty" => {
            let r = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty");
            match r {
                Ok(f) => verdict(probe::tiocsti(f.as_fd(), b'x'), "TIOCSTI on /dev/tty"),
                Err(e) => verdict(io(Err(e)), "open /dev/tty"),
            }
        }
        "tioclinux" => verdict(probe::tioclinux(std::io::stdin().as_fd()), "TIOCLINUX on stdin"),
        "mount" => verdict(
            nix::mount::mount(
                Some("tmpfs"),
                "/tmp",
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            ),
            "mount tmpfs",
        ),
        "umount" => verdict(nix::mount::umount2("/proc", nix::mount::MntFlags::MNT_DETACH), "umount /proc"),
        "unshare-user" => verdict(nix::sched::unshare(CloneFlags::CLONE_NEWUSER), "unshare user namespace"),
        "unshare-net" => verdict(nix::sched::unshare(CloneFlags::CLONE_NEWNET), "unshare network namespace"),
        "unshare-mount" => verdict(nix::sched::unshare(CloneFlags::CLONE_NEWNS), "unshare mount namespace"),
        "clone3-user" => verdict(probe::clone3_newuser(), "clone3 with a new user namespace"),
        "chroot" => verdict(nix::unistd::chroot("/tmp"), "chroot"),
        "module" => verdict(probe::init_module_empty(), "init_module"),
        "kexec" => verdict(probe::kexec_load_empty(), "kexec_load"),
        "bpf" => verdict(probe::bpf_map_create(), "bpf map create"),
        "perf" => verdict(probe::perf_event_open_sw(), "perf_event_open"),
        "userfaultfd" => verdict(probe::userfaultfd(), "userfaultfd"),
        "keyctl" => verdict(probe::keyctl_session_keyring(), "keyctl"),
        "add-key" => verdict(probe::add_key_user(), "add_key"),
        "open-by-handle" => verdict(probe::open_by_handle_at(), "open_by_handle_at"),
        "io-uring" => verdict(probe::io_uring_setup(), "io_uring_setup"),
        #[cfg(target_arch = "x86_64")]
        "x32" => verdict(probe::x32_syscall(libc::SYS_getpid), "x32 syscall"),
        "raw-socket" => verdict(
            nix::sys::socket::socket(
                nix::sys::socket::AddressFamily::Inet,
                nix::sys::socket::SockType::Raw,
                nix::sys::socket::SockFlag::empty(),
                nix::sys::socket::SockProtocol::Icmp,
            )
            .map(drop),
            "raw socket",
        ),
        "packet-socket" => verdict(
            nix::sys::socket::socket(
                nix::sys::socket::AddressFamily::Packet,
                nix::sys::socket::SockType::Raw,
                nix::sys::socket::SockFlag::empty(),
                None,
            )
            .map(drop),
            "packet socket",
        ),
        "setuid-root" => verdict(nix::unistd::setuid(nix::unistd::Uid::from_raw(0)), "setuid(0)"),
        "setid-file" => setid_file(arg(&args, 2)),
        "swap" => {
            // Exchanges two names in a loop until killed (a file and a link, for a host copy to
            // race against).
            let (a, b) = (arg(&args, 2), arg(&args, 3));
            loop {
                let _ = nix::fcntl::renameat2(
                    nix::fcntl::AT_FDCWD,
                    a,
                    nix::fcntl::AT_FDCWD,
                    b,
                    nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                );
            }
        }
        "loopback" => {
            // A server and a client inside the sandbox: its own loopback works.
            let r = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| std::net::TcpStream::connect(l.local_addr()?).map(drop));
            match r {
                Ok(()) => println!("LOOPBACK ok"),
                Err(e) => println!("LOOPBACK failed: {e}"),
            }
            ExitCode::SUCCESS
        }
        "busy" => {
            // Spins for SECS of wall time and prints the CPU seconds it got.
            let secs: f64 = arg(&args, 2).parse().unwrap_or(1.0);
            let start = std::time::Instant::now();
            let mut x = 0u64;
            while start.elapsed().as_secs_f64() < secs {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF);
            let cpu = usage.map(|u| {
                let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
                t(u.user_time()) + t(u.system_time())
            });
            match cpu {
                Ok(c) => println!("{c:.3}"),
                Err(e) => println!("getrusage failed: {e}"),
            }
            ExitCode::SUCCESS
        }
        "fork-bomb" => fork_bomb(arg(&args, 2).parse().unwrap_or(100)),
        "memory-hog" => memory_hog(arg(&args, 2).parse().unwrap_or(256)),
        other => {
            eprintln!("agentbox-probe: unknown attack {other}");
            ExitCode::from(2)
        }
    }
}
