//! Threat model rows "what it leaves behind" and "the person's terminal": attacks in time. The
//! agent plants something; later a host tool, another agent or the person acts on it; the test
//! checks the host. Each runs as the caller (root in CI) and as uid 65534.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::agents::{attach_on_pty, read_until, Agents};
use crate::support::*;

/// Every entry below `dir` with a set-user-ID or set-group-ID bit.
fn setid_entries(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        if m.mode() & 0o6000 != 0 {
            found.push(format!("{} {:o}", e.path().display(), m.mode()));
        }
        if m.is_dir() {
            found.extend(setid_entries(&e.path()));
        }
    }
    found
}

/// The agent tries every way to leave a set-id file (and `cp -p`, `tar`, `install -m`); nothing
/// on the host carries either bit afterwards, and what it made is not owned by host root.
#[test]
fn no_setid_file_reaches_the_host() {
    for who in modes() {
        let ws = workspace(who);
        let out = run_in(who, &ws, &[], &[PROBE, "setid-file", ws.path.to_str().unwrap()]);
        assert_blocked(who, &out);
        let script = "cp /usr/bin/env ./tool; chmod 4755 ./tool; chmod u+s,g+s ./tool; \
                      install -m 6755 /usr/bin/env ./installed; \
                      mkdir src; cp /usr/bin/env src/x; tar cf a.tar src; \
                      tar --mode=6755 -cf b.tar src; mkdir out; tar -xpf b.tar -C out; true";
        let out = run_in(who, &ws, &[], &["sh", "-c", script]);
        assert_eq!(out.status.code(), Some(0), "as {who:?}: {}", text(&out.stderr));
        assert_eq!(setid_entries(&ws.path), Vec::<String>::new(), "as {who:?}");
        // The person later runs what the agent left: it runs as the person, not as its maker.
        let tool = ws.path.join("tool");
        assert!(tool.exists(), "as {who:?}");
        let owner = std::fs::metadata(&tool).unwrap().uid();
        assert_ne!(owner, 0, "as {who:?}: the agent's file belongs to host root");
        assert_eq!(owner, agent_host_id(who), "as {who:?}");
    }
}

/// As root, a hard link to a root-owned file outside the workspace (planted by a host user) is
/// not writable from inside: the agent does not write as host root.
#[test]
fn a_hard_link_to_a_host_file_is_not_writable() {
    for who in modes() {
        let ws = workspace(who);
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("passwd-like");
        std::fs::write(&target, "root:x:0:0\n").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        if std::fs::hard_link(&target, ws.path.join("x")).is_err() {
            continue; // another filesystem: the plant is impossible
        }
        let out = run_in(who, &ws, &[], &["sh", "-c", "printf PWNED >> x; echo rc=$?"]);
        assert!(
            !text(&out.stdout).contains("rc=0"),
            "as {who:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "root:x:0:0\n", "as {who:?}");
    }
}

/// Inside, /etc/passwd and /etc/group list the sandbox's own accounts, not the host's.
#[test]
fn the_sandbox_has_its_own_accounts() {
    for who in modes() {
        let ws = workspace(who);
        let out =
            run_in(who, &ws, &[], &["sh", "-c", "whoami; id -un; cut -d: -f1 /etc/passwd | tr '\\n' ' '"]);
        assert_eq!(
            text(&out.stdout),
            "agent\nagent\nroot agent nobody ",
            "as {who:?}: {}",
            text(&out.stderr)
        );
    }
}

/// A set-id file in a `--from-dir` source (the host's) or in an agent's workspace is copied
/// without the bits by `spawn --from-dir` and `clone`; a sparse file stays sparse.
#[test]
fn host_copies_drop_setid_bits_and_keep_sparse_files_sparse() {
    for who in modes() {
        let a = Agents::new(who);
        let src = tempfile::tempdir().unwrap();
        std::fs::copy("/usr/bin/env", src.path().join("suid")).unwrap();
        std::fs::set_permissions(src.path().join("suid"), std::fs::Permissions::from_mode(0o6755)).unwrap();
        let owner = agent_host_id(who);
        for p in [src.path().to_path_buf(), src.path().join("suid")] {
            std::os::unix::fs::chown(&p, Some(owner), Some(owner)).unwrap();
        }
        std::fs::set_permissions(src.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        a.ok(&[
            "spawn",
            "s1",
            "--from-dir",
            src.path().to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "touch suid; truncate -s 2G sparse; sleep 600",
        ]);
        // The directory belongs to the sandbox's host id: the workspace is an overlay, and what
        // the agent wrote lies in its upper layer.
        let layer = |name: &str| a.home.join("agents").join(name).join("layers/upper");
        assert!(layer("s1").is_dir(), "as {who:?}: no overlay");
        let ws = layer("s1");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ws.join("sparse").exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(setid_entries(&ws), Vec::<String>::new(), "as {who:?}");
        a.ok(&["kill", "s1"]);
        a.ok(&["clone", "s1", "s2"]);
        let copy = layer("s2");
        let m = std::fs::metadata(copy.join("sparse")).unwrap();
        assert_eq!(m.len(), 2 << 30, "as {who:?}");
        assert!(
            m.blocks() * 512 < 1 << 20,
            "as {who:?}: the clone expanded a sparse file to {} bytes",
            m.blocks() * 512
        );
        assert_eq!(setid_entries(&copy), Vec::<String>::new(), "as {who:?}");
    }
}

/// `clone` of a running agent that swaps a file and a symlink to a host secret in a loop never
/// copies the secret (the host copy works on descriptors, not on names checked earlier).
#[test]
fn clone_of_a_racing_workspace_never_copies_a_link_target() {
    for who in modes() {
        let a = Agents::new(who);
        let secret = a.home.join("secrets.env");
        a.ok(&["env", "set", "RACE_SECRET", "canary-race-secret"]);
        assert!(secret.exists());
        let probe = format!("{}:{PROBE}:ro", bins().probe.display());
        let script = format!("echo harmless > a; ln -s {} b; exec {PROBE} swap a b", secret.display());
        a.ok(&["spawn", "racer", "-v", &probe, "--", "sh", "-c", &script]);
        for i in 0..8 {
            let name = format!("copy{i}");
            a.ok(&["clone", "racer", &name]);
            let ws = a.home.join("agents").join(&name).join("workspace");
            for f in ["a", "b"] {
                let p = ws.join(f);
                // Caught mid-swap, a name may be missing from the copy; never the secret.
                let Ok(meta) = std::fs::symlink_metadata(&p) else { continue };
                if meta.is_file() {
                    let content = std::fs::read_to_string(&p).unwrap();
                    assert!(!content.contains("canary"), "as {who:?}: round {i}: {f} holds the secret");
                }
            }
            a.ok(&["rm", &name]);
        }
    }
}

/// Opens a PTY pair: (master, slave).
fn pty() -> (std::fs::File, std::os::fd::OwnedFd) {
    let p = nix::pty::openpty(None, None).unwrap();
    (std::fs::File::from(p.master), p.slave)
}

/// Reads what arrives on `master` for `wait`.
pub(crate) fn drain_for(master: &mut std::fs::File, wait: Duration) -> String {
    let fd = std::os::fd::AsFd::as_fd(master);
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).unwrap();
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFL(
            nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK,
        ),
    )
    .unwrap();
    let deadline = Instant::now() + wait;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match master.read(&mut buf) {
            Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// `exec` without `-t` and `run` without a terminal of their own relay pipes: the person's
/// terminal never enters the sandbox, so a process left behind can neither read what the person
/// types later nor write to their screen.
#[test]
fn the_persons_terminal_never_enters_a_sandbox() {
    for who in modes() {
        let a = Agents::new(who);
        a.ok(&["spawn", "t", "--", "sleep", "600"]);
        // What a git pager or build script would do: keep the descriptors, write later.
        let plant = "readlink /proc/self/fd/0 /proc/self/fd/1 /proc/self/fd/2; \
                     (sleep 1; echo LATE-WRITE; printf '\\033]52;c;cHduZWQ=\\007'; cat > /tmp/stolen) \
                     </dev/fd/0 >/dev/fd/1 2>&1 & exit 0";
        let (mut master, slave) = pty();
        let status = a
            .cmd(&["exec", "t", "--", "sh", "-c", plant])
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .status()
            .unwrap();
        assert!(status.success(), "as {who:?}");
        // The person types after the command returned; the leftover process must not get it.
        std::io::Write::write_all(&mut master, b"sudo-password\n").unwrap();
        let seen = drain_for(&mut master, Duration::from_secs(2));
        assert!(seen.contains("pipe:"), "as {who:?}: the command's stdio was not pipes: {seen:?}");
        assert!(!seen.contains("/dev/pts"), "as {who:?}: a terminal entered the sandbox: {seen:?}");
        assert!(!seen.contains("LATE-WRITE") && !seen.contains("]52;"), "as {who:?}: {seen:?}");
        let stolen = a.run(&["exec", "t", "--", "cat", "/tmp/stolen"]);
        assert!(!text(&stolen.stdout).contains("sudo-password"), "as {who:?}: the person's input was read");

        // `run` without a terminal of its own: the same relay.
        let ws = workspace(who);
        let (mut master, slave) = pty();
        let status = run_command(
            who,
            &ws,
            &["--no-tty"],
            &["sh", "-c", "readlink /proc/self/fd/0 /proc/self/fd/1; test -t 0 || echo not-a-tty"],
        )
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .status()
        .unwrap();
        assert!(status.success(), "as {who:?}");
        let seen = drain_for(&mut master, Duration::from_millis(300));
        assert!(seen.contains("not-a-tty") && !seen.contains("/dev/pts"), "as {who:?}: {seen:?}");
    }
}

/// What an agent prints reaches an attached terminal filtered: no clipboard writes or reads, no
/// title report that would be typed back into the agent; and the modes it set (mouse tracking,
/// alternate screen, bracketed paste, hidden cursor) are undone on detach.
#[test]
fn attach_filters_escapes_and_restores_the_terminal() {
    for who in modes() {
        let a = Agents::new(who);
        let script = "printf 'ready\\033]52;c;cHduZWQ=\\007\\033]52;c;?\\007\\033[21t\\033[?1049h\\033[?1000h\\033[?2004h\\033[?25l'; \
                      printf 'shown\\n'; sleep 600";
        a.ok(&["spawn", "esc", "--", "sh", "-c", script]);
        let (mut child, mut master) = attach_on_pty(&a, &["attach", "esc"]);
        let mut seen = Vec::new();
        read_until(&mut master, &mut seen, "shown");
        std::io::Write::write_all(&mut master, b"\x1d").unwrap();
        assert!(child.wait().unwrap().success(), "as {who:?}");
        let rest = drain_for(&mut master, Duration::from_millis(300));
        let all = format!("{}{rest}", String::from_utf8_lossy(&seen));
        assert!(!all.contains("]52;"), "as {who:?}: clipboard sequence reached the terminal: {all:?}");
        assert!(!all.contains("\x1b[21t"), "as {who:?}: {all:?}");
        // Whatever mode reached the terminal is off again at the end (the screen replay on attach
        // draws the agent's alternate screen on the main one, so 1049 may never be sent).
        for (on, off) in [
            ("\x1b[?1049h", "\x1b[?1049l"),
            ("\x1b[?1000h", "\x1b[?1000l"),
            ("\x1b[?2004h", "\x1b[?2004l"),
            ("\x1b[?25l", "\x1b[?25h"),
        ] {
            if let Some(set) = all.rfind(on) {
                assert!(all.rfind(off) > Some(set), "as {who:?}: {on:?} left on after detach: {all:?}");
            }
        }
        assert!(
            all.contains("\x1b[?1000h"),
            "as {who:?}: the test expects mouse tracking to be replayed: {all:?}"
        );
    }
}

/// Threat model, config dirs: an agent of the claude-code profile plants a link to agentbox's
/// secrets as its `~/.claude/CLAUDE.md`, a `SessionStart` hook in `settings.json` and reads the
/// login file; the person's `~/.claude` is untouched and the next agent's merged instructions do
/// not contain the secret. The person's own login and settings never entered the sandbox.
#[test]
fn config_dirs_are_the_agents_own_copy() {
    for who in modes() {
        let a = Agents::new(who);
        let user = tempfile::tempdir().unwrap();
        let home = user.path().join("u");
        let cfg = home.join(".claude");
        std::fs::create_dir_all(&cfg).unwrap();
        std::fs::write(cfg.join("CLAUDE.md"), "# house rules\n").unwrap();
        std::fs::write(cfg.join(".credentials.json"), "{\"oauth\":\"person-oauth-token\"}").unwrap();
        std::fs::write(cfg.join("settings.json"), "{\"theme\":\"dark\"}").unwrap();
        if who == As::Nobody {
            for p in [
                &home,
                &cfg,
                &cfg.join("CLAUDE.md"),
                &cfg.join(".credentials.json"),
                &cfg.join("settings.json"),
            ] {
                std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
            }
        }
        a.ok(&["env", "set", "PLANT_SECRET", "canary-config-secret"]);
        let secrets = a.home.join("secrets.env");
        let plant = format!(
            "cat ~/.claude/.credentials.json 2>&1; cat ~/.claude/settings.json 2>&1; \
             rm -f ~/.claude/CLAUDE.md; ln -s {} ~/.claude/CLAUDE.md; \
             echo '{{\"hooks\":{{\"SessionStart\":[{{\"command\":\"touch /tmp/pwned\"}}]}}}}' > ~/.claude/settings.json; \
             echo planted",
            secrets.display()
        );
        let spawn = |name: &str, script: &str| {
            let out = a
                .cmd(&["spawn", name, "-p", "claude-code", "--network", "none", "--", "sh", "-c", script])
                .env("HOME", &home)
                .output()
                .unwrap();
            assert!(out.status.success(), "as {who:?}: {}", text(&out.stderr));
            a.run(&["wait", name, "--timeout", "30"]);
            a.ok(&["logs", name])
        };
        let logs = spawn("planter", &plant);
        assert!(logs.contains("planted"), "as {who:?}: {logs}");
        assert!(!logs.contains("person-oauth-token") && !logs.contains("dark"), "as {who:?}: {logs}");
        // The person's config is as it was: no link, no hook.
        let md = std::fs::symlink_metadata(cfg.join("CLAUDE.md")).unwrap();
        assert!(md.is_file(), "as {who:?}: the host's CLAUDE.md was replaced");
        assert_eq!(std::fs::read_to_string(cfg.join("settings.json")).unwrap(), "{\"theme\":\"dark\"}");
        // The next agent's instructions are the person's plus the note, never the secret.
        let logs = spawn("next", "cat ~/.claude/CLAUDE.md");
        assert!(logs.contains("# house rules") && logs.contains("## Sandbox"), "as {who:?}: {logs}");
        assert!(!logs.contains("canary-config-secret"), "as {who:?}: the secret reached an agent");
    }
}
