//! Threat model rows "host processes and sessions", "secrets" (env) and "lifecycle".

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};

use crate::support::*;

#[test]
fn host_processes_are_invisible_and_untouchable() {
    for who in modes() {
        let mut victim = KillOnDrop(Command::new("sleep").arg("300").spawn().unwrap());
        let pid = victim.0.id().to_string();
        assert_blocked(who, &attack(who, &[], &["kill", &pid]));
        assert_blocked(who, &attack(who, &[], &["ptrace", &pid]));
        // The sandbox's init cannot be traced either: it is not dumpable.
        assert_blocked(who, &attack(who, &[], &["ptrace", "1"]));
        let ws = workspace(who);
        // Only the sandbox's own processes exist: init, sh, ls and grep.
        let out = run_in(who, &ws, &[], &["sh", "-c", "ls /proc | grep -c '^[0-9]'"]);
        let count: u32 = text(&out.stdout).trim().parse().unwrap();
        assert!(count <= 4, "as {who:?}: {count} processes visible");
        // init shows no trace of the launcher's command line (host paths, flags).
        let out = run_in(who, &ws, &[], &["cat", "/proc/1/cmdline"]);
        assert_eq!(text(&out.stdout).trim_end_matches('\0'), "agentbox-init", "as {who:?}");
        assert!(victim.0.try_wait().unwrap().is_none(), "victim was killed");
    }
}

#[test]
fn env_secrets_never_reach_the_sandbox() {
    const CANARY: &str = "sk-ant-canary-4f7d2c";
    for who in modes() {
        let ws = workspace(who);
        let mut cmd = command(who);
        cmd.env("ANTHROPIC_API_KEY", CANARY).env("AGENTBOX_IT_SECRET", CANARY);
        cmd.args(["run", "-w"]).arg(&ws.path).args(["--", "sh", "-c", "env; cat /proc/self/environ /proc/1/environ /proc/1/cmdline 2>&1; cat /proc/1/mem 2>&1 | head -c 100"]);
        let out = cmd.output().unwrap();
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(!all.contains(CANARY), "as {who:?}: secret visible:\n{all}");
        assert!(text(&out.stdout).contains("HOME=/home/agent"), "as {who:?}");
        // Explicitly passed variables do arrive.
        let mut cmd = command(who);
        cmd.env("AGENTBOX_IT_PASS", "passed").args(["run", "-w"]).arg(&ws.path);
        cmd.args([
            "-e",
            "AGENTBOX_IT_PASS",
            "-e",
            "EXTRA=a=b",
            "--",
            "sh",
            "-c",
            "echo $AGENTBOX_IT_PASS $EXTRA",
        ]);
        assert_eq!(text(&cmd.output().unwrap().stdout), "passed a=b\n", "as {who:?}");
    }
}

fn raw_pty() -> (OwnedFd, OwnedFd) {
    let pty = nix::pty::openpty(None, None).unwrap();
    let mut t = tcgetattr(pty.slave.as_fd()).unwrap();
    cfmakeraw(&mut t);
    tcsetattr(pty.slave.as_fd(), SetArg::TCSANOW, &t).unwrap();
    (pty.master, pty.slave)
}

/// Bytes waiting to be read on the slave side: what TIOCSTI would have injected.
fn pending_input(slave: &OwnedFd) -> usize {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    fcntl(slave.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
    let mut buf = [0u8; 64];
    match nix::unistd::read(slave.as_fd(), &mut buf) {
        Ok(n) => n,
        Err(nix::errno::Errno::EAGAIN) => 0,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn terminal_injection_is_refused() {
    for who in modes() {
        // The caller's terminal passed straight through (--no-tty): TIOCSTI on it must fail.
        let (master, slave) = raw_pty();
        let ws = workspace(who);
        for attack_name in ["tiocsti", "tiocsti-high", "tioclinux"] {
            let mut cmd = command(who);
            cmd.arg("run").arg("-w").arg(&ws.path).arg("--no-tty");
            cmd.arg("--mount").arg(format!("{}:{PROBE}:ro", bins().probe.display()));
            cmd.args(["--", PROBE, attack_name]).stdin(Stdio::from(slave.try_clone().unwrap()));
            let out = cmd.output().unwrap();
            assert_blocked(who, &out);
        }
        assert_eq!(pending_input(&slave), 0, "as {who:?}: bytes were injected into the caller's terminal");
        drop(master);

        // With a terminal of its own (stdin and stdout are terminals), the sandbox's pty refuses it too.
        let (master, slave) = raw_pty();
        let mut cmd = command(who);
        cmd.arg("run").arg("-w").arg(&ws.path);
        cmd.arg("--mount").arg(format!("{}:{PROBE}:ro", bins().probe.display()));
        cmd.args(["--", "sh", "-c", &format!("{PROBE} tiocsti; {PROBE} tiocsti-tty")]);
        cmd.stdin(Stdio::from(slave.try_clone().unwrap())).stdout(Stdio::from(slave.try_clone().unwrap()));
        let status = cmd.status().unwrap();
        assert!(status.success(), "as {who:?}: {status:?}");
        drop(cmd); // it holds copies of the slave; the master reports end-of-file only without them
        drop(slave);
        let mut out = String::new();
        let _ = std::fs::File::from(master).read_to_string(&mut out);
        assert_eq!(out.matches("BLOCKED").count(), 2, "as {who:?}: {out}");
        assert!(!out.contains("ESCAPED"), "as {who:?}: {out}");
    }
}

#[test]
fn nothing_survives_the_sandbox() {
    for (i, who) in modes().into_iter().enumerate() {
        let marker = format!("31337.{}{}", std::process::id(), i);
        let ws = workspace(who);
        let script =
            format!("setsid sleep {marker} </dev/null >/dev/null 2>&1 & (sleep {marker} &) ; echo started");
        let out = run_in(who, &ws, &[], &["sh", "-c", &script]);
        assert_eq!(text(&out.stdout), "started\n", "as {who:?}: {}", text(&out.stderr));
        assert_eq!(
            host_processes_matching(&format!("sleep {marker}")),
            Vec::<i32>::new(),
            "as {who:?}: survivors"
        );
    }
}

#[test]
fn timeout_kills_the_whole_tree() {
    for (i, who) in modes().into_iter().enumerate() {
        let marker = format!("31338.{}{}", std::process::id(), i);
        let ws = workspace(who);
        let started = Instant::now();
        let out =
            run_in(who, &ws, &["--timeout", "1"], &["sh", "-c", &format!("sleep {marker} & sleep {marker}")]);
        assert_eq!(out.status.code(), Some(124), "as {who:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("timed out after 1s"));
        assert!(started.elapsed() < Duration::from_secs(60));
        assert_eq!(
            host_processes_matching(&format!("sleep {marker}")),
            Vec::<i32>::new(),
            "as {who:?}: survivors"
        );
    }
}

#[test]
fn killing_agentbox_kills_the_sandbox() {
    for (i, who) in modes().into_iter().enumerate() {
        let marker = format!("31339.{}{}", std::process::id(), i);
        let ws = workspace(who);
        let mut cmd = command(who);
        cmd.arg("run").arg("-w").arg(&ws.path).args(["--", "sh", "-c", &format!("echo up; sleep {marker}")]);
        let mut child = KillOnDrop(cmd.stdout(Stdio::piped()).spawn().unwrap());
        let mut buf = [0u8; 3];
        child.0.stdout.as_mut().unwrap().read_exact(&mut buf).unwrap();
        // "up" is printed just before `sleep` starts: wait for it.
        let started = Instant::now();
        while host_processes_starting_with(&format!("sleep {marker}")).is_empty() {
            assert!(started.elapsed() < Duration::from_secs(10), "as {who:?}: sleep never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        // SIGKILL agentbox itself (setpriv execs it, so the child is agentbox in both modes).
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !host_processes_matching(&format!("sleep {marker}")).is_empty() {
            assert!(Instant::now() < deadline, "as {who:?}: sandbox outlived agentbox");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn signals_are_forwarded_to_the_command() {
    for who in modes() {
        let ws = workspace(who);
        let script = "trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.05; done";
        let mut cmd = run_command(who, &ws, &[], &["sh", "-c", script]);
        let mut child = KillOnDrop(cmd.stdout(Stdio::piped()).spawn().unwrap());
        let mut buf = [0u8; 6];
        child.0.stdout.as_mut().unwrap().read_exact(&mut buf).unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let mut rest = String::new();
        child.0.stdout.take().unwrap().read_to_string(&mut rest).unwrap();
        assert_eq!(child.0.wait().unwrap().code(), Some(3), "as {who:?}");
        assert_eq!(rest, "got-term\n");
    }
}
