//! `agentbox run` as a user runs it: exit codes, arguments, environment, terminals, bad input.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn exit_codes_follow_the_command() {
    for who in modes() {
        let ws = workspace(who);
        for (argv, code) in [
            (vec!["true"], 0),
            (vec!["sh", "-c", "exit 7"], 7),
            (vec!["sh", "-c", "kill -9 $$"], 137),
            (vec!["no-such-command-here"], 127),
            (vec!["/etc/passwd"], 126),
        ] {
            let out = run_in(who, &ws, &[], &argv);
            assert_eq!(out.status.code(), Some(code), "as {who:?}: {argv:?}: {}", text(&out.stderr));
        }
        let out = run_in(who, &ws, &[], &["no-such-command-here"]);
        assert!(text(&out.stderr).contains("command not found inside the sandbox"));
    }
}

#[test]
fn arguments_arrive_byte_for_byte() {
    let ws = workspace(As::Caller);
    let weird: Vec<std::ffi::OsString> = vec![
        os("a b"),
        os(""),
        os("'single'"),
        os("\"double\""),
        os("$HOME"),
        os("--network"),
        os("-e"),
        os("*"),
        os("tab\there"),
        os("new\nline"),
        std::ffi::OsStr::from_bytes(b"\xff\xfe not utf8").to_os_string(),
    ];
    let mut cmd = command(As::Caller);
    cmd.arg("run").arg("-w").arg(&ws.path).args(["--", "printf", "%s\\0"]).args(&weird);
    let out = cmd.output().unwrap();
    let got: Vec<&[u8]> = out.stdout.split(|b| *b == 0).collect();
    let expected: Vec<&[u8]> = weird.iter().map(|a| a.as_bytes()).collect();
    assert_eq!(&got[..got.len() - 1], &expected[..]);
}

#[test]
fn sandbox_layout() {
    for who in modes() {
        let ws = workspace(who);
        let script =
            "pwd; id -u; hostname; echo $HOME; touch $HOME/h /tmp/t /var/tmp/v /dev/shm/s && echo writable; \
                      ls /dev | tr '\\n' ' '; echo; test -w /usr || echo usr-ro; ls /tmp";
        let out = run_in(who, &ws, &["--hostname", "box1"], &["sh", "-c", script]);
        let lines: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
        assert_eq!(lines[0], ws.path.to_str().unwrap(), "as {who:?}: {}", text(&out.stderr));
        assert_eq!(lines[1], "1000");
        assert_eq!(lines[2], "box1");
        assert_eq!(lines[3], "/home/agent");
        assert_eq!(lines[4], "writable");
        for dev in ["null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm"] {
            assert!(lines[5].split(' ').any(|d| d == dev), "as {who:?}: /dev lacks {dev}: {}", lines[5]);
        }
        assert_eq!(lines[6], "usr-ro");
        // The private /tmp holds only the path down to the workspace and what the command made.
        let tmp: Vec<&str> = lines[7..].iter().map(String::as_str).collect();
        let top = ws
            .path
            .strip_prefix("/tmp")
            .unwrap()
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(tmp, vec![top.as_str(), "t"], "as {who:?}");
    }
}

#[test]
fn device_nodes_work() {
    for who in modes() {
        let ws = workspace(who);
        let script = "echo x > /dev/null && head -c 8 /dev/zero | wc -c && head -c 8 /dev/urandom | wc -c \
                      && head -c 8 /dev/random | wc -c && (echo x > /dev/full; test $? -ne 0) && echo done";
        let out = run_in(who, &ws, &[], &["sh", "-c", script]);
        assert_eq!(text(&out.stdout), "8\n8\n8\ndone\n", "as {who:?}: {}", text(&out.stderr));
    }
}

#[test]
fn workdir_and_uid_options() {
    let ws = workspace(As::Caller);
    std::fs::create_dir(ws.path.join("sub")).unwrap();
    let out = run_in(
        As::Caller,
        &ws,
        &["--workdir", "sub", "--uid", "4242", "--gid", "4243"],
        &["sh", "-c", "pwd; id -u; id -g"],
    );
    assert_eq!(text(&out.stdout), format!("{}/sub\n4242\n4243\n", ws.path.display()));
    let out = run_in(As::Caller, &ws, &["--workdir", "missing"], &["true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("working directory"), "{}", text(&out.stderr));
}

#[test]
fn dangerous_workspaces_are_refused() {
    let home = tempfile::tempdir().unwrap();
    let home_path = std::fs::canonicalize(home.path()).unwrap();
    std::fs::create_dir(home_path.join("proj")).unwrap();
    for (ws, reason) in [
        ("/".to_string(), "root directory"),
        (home_path.display().to_string(), "home directory"),
        (home_path.parent().unwrap().display().to_string(), "contains your home"),
        ("/usr".to_string(), "system directory"),
        ("/var/tmp".to_string(), "shared temporary"),
    ] {
        let out = command(As::Caller)
            .env("HOME", &home_path)
            .args(["run", "-w", &ws, "--", "true"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(125), "{ws}");
        assert!(text(&out.stderr).contains(reason), "{ws}: {}", text(&out.stderr));
    }
    // The default workspace is the current directory; a project inside home is fine.
    let out = command(As::Caller)
        .env("HOME", &home_path)
        .current_dir(home_path.join("proj"))
        .args(["run", "--", "pwd"])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout).trim(), home_path.join("proj").to_str().unwrap(), "{}", text(&out.stderr));
}

#[test]
fn bad_input_is_explained() {
    let ws = workspace(As::Caller);
    let ws_s = ws.path.to_str().unwrap();
    for (args, needle) in [
        (vec!["--memory", "12X"], "invalid size"),
        (vec!["--memory", "1M"], "minimum"),
        (vec!["--pids", "0"], "between 2"),
        (vec!["--cpus", "-1"], "--cpus"),
        (vec!["--timeout", "0"], "--timeout"),
        // Past the clock's end: refused, never a panic.
        (vec!["--timeout", "18446744073709551615"], "ten years"),
        (vec!["--network", "wifi"], "unknown network mode"),
        (vec!["--mount", "/a:rel"], "invalid --mount"),
        (vec!["--mount", "/does/not/exist"], "--mount source /does/not/exist"),
        (vec!["--mount", "/usr:/proc/x:ro"], "builds /proc"),
        (vec!["--env", "1BAD=x"], "invalid --env"),
        (vec!["--env", "AGENTBOX_SURELY_UNSET_VAR"], "does not have set"),
        (vec!["--hostname=-bad"], "invalid hostname"),
        (vec!["--hostname", "a.b"], "invalid hostname"),
        (vec!["--bogus"], "unexpected argument"),
    ] {
        let out =
            command(As::Caller).args(["run", "-w", ws_s]).args(&args).args(["--", "true"]).output().unwrap();
        assert_eq!(out.status.code(), Some(125), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(needle), "{args:?}: {}", text(&out.stderr));
    }
    let out = command(As::Caller).args(["run", "-w", ws_s]).output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    let out = command(As::Caller).args(["run", "-w", "/nonexistent/dir", "--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("/nonexistent/dir"));
}

#[test]
fn dry_run_prints_the_plan() {
    let ws = workspace(As::Caller);
    let out = command(As::Caller)
        .args(["run", "--dry-run", "-w"])
        .arg(&ws.path)
        .args(["--", "echo", "hi"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["process"]["argv"], serde_json::json!(["echo", "hi"]));
    let mounts = plan["mounts"].as_array().unwrap();
    assert!(mounts
        .iter()
        .any(|m| m["op"] == "bind" && m["target"] == ws.path.to_str().unwrap() && m["writable"] == true));
    assert!(mounts.iter().any(|m| m["op"] == "hide" && m["target"] == "/etc/shadow"));
    assert!(plan["seccomp"]["deny"].as_array().unwrap().iter().any(|r| r["name"] == "SYS_bpf"));
}

#[test]
fn interactive_commands_get_a_terminal() {
    for who in modes() {
        let ws = workspace(who);
        let pty = nix::pty::openpty(
            Some(&nix::pty::Winsize { ws_row: 33, ws_col: 101, ws_xpixel: 0, ws_ypixel: 0 }),
            None,
        )
        .unwrap();
        let script = "tty; stty size; printf 'name? '; read name; echo \"hello $name\"; exit 5";
        let mut cmd = run_command(who, &ws, &[], &["sh", "-c", script]);
        cmd.stdin(Stdio::from(pty.slave.try_clone().unwrap()))
            .stdout(Stdio::from(pty.slave.try_clone().unwrap()));
        let mut child = cmd.spawn().unwrap();
        drop(cmd); // it holds copies of the slave; the master reports end-of-file only without them
        drop(pty.slave);
        let mut master = std::fs::File::from(pty.master);
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&seen).contains("name? ") {
            assert!(Instant::now() < deadline, "as {who:?}: no prompt: {}", String::from_utf8_lossy(&seen));
            let n = master.read(&mut buf).unwrap();
            seen.extend_from_slice(&buf[..n]);
        }
        master.write_all(b"agent\r").unwrap();
        let status = child.wait().unwrap();
        loop {
            match master.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        let screen = String::from_utf8_lossy(&seen);
        assert_eq!(status.code(), Some(5), "as {who:?}: {screen}");
        assert!(screen.contains("/dev/pts/0"), "as {who:?}: the sandbox has its own devpts: {screen}");
        assert!(screen.contains("33 101"), "as {who:?}: window size not passed: {screen}");
        assert!(screen.contains("hello agent"), "as {who:?}: {screen}");
        let _ = master.as_fd();
    }
}

#[test]
fn forced_tty_and_piped_stdin() {
    let ws = workspace(As::Caller);
    let mut cmd = command(As::Caller);
    cmd.arg("run").arg("-w").arg(&ws.path).args([
        "--",
        "sh",
        "-c",
        "read x; echo got:$x; test -t 0 || echo not-a-tty",
    ]);
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"piped\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "got:piped\nnot-a-tty\n");

    let mut cmd = command(As::Caller);
    cmd.arg("run").arg("-t").arg("-w").arg(&ws.path).args([
        "--",
        "sh",
        "-c",
        "test -t 0 && test -t 1 && echo tty",
    ]);
    let out = cmd.output().unwrap();
    assert_eq!(text(&out.stdout).trim(), "tty");
}

#[test]
fn refuses_to_run_without_user_namespaces() {
    // A user namespace whose own limit on nested user namespaces is 0 stands in for a host where
    // user namespaces are disabled.
    let ws = workspace(As::Caller);
    let script = format!(
        "echo 0 > /proc/sys/user/max_user_namespaces && exec {} run -w {} -- touch ran",
        bins().agentbox.display(),
        ws.path.display()
    );
    let out =
        Command::new("unshare").args(["--user", "--map-root-user", "sh", "-c", &script]).output().unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("cannot create the sandbox namespaces"), "{stderr}");
    assert!(stderr.contains("max_user_namespaces"), "the hint says what to check: {stderr}");
    assert!(!ws.path.join("ran").exists(), "the command ran without a sandbox");

    let script =
        format!("echo 0 > /proc/sys/user/max_user_namespaces && exec {} doctor", bins().agentbox.display());
    let out =
        Command::new("unshare").args(["--user", "--map-root-user", "sh", "-c", &script]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("FAIL  user namespaces"), "{}", text(&out.stdout));
}

#[test]
fn doctor_reports_a_working_sandbox() {
    for who in modes() {
        let out = command(who).args(["doctor", "--json"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "as {who:?}: {}{}", text(&out.stdout), text(&out.stderr));
        let checks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let sandbox = checks.as_array().unwrap().iter().find(|c| c["name"] == "sandbox").unwrap();
        assert_eq!(sandbox["status"], "ok", "as {who:?}: {sandbox}");
        for name in ["kernel", "user namespaces", "landlock", "seccomp", "cgroups", "kvm"] {
            assert!(checks.as_array().unwrap().iter().any(|c| c["name"] == name), "{name} missing");
        }
    }
}

/// A mount target the system's read-only tree does not have (`/opt/agents`) gets its mount point
/// made: the rest of that directory stays as it was, and read-only.
#[test]
fn a_mount_under_a_read_only_system_directory_works() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("tool"), "hello from the tool\n").unwrap();
    std::fs::set_permissions(src.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let before: Vec<_> = std::fs::read_dir("/usr/local").unwrap().map(|e| e.unwrap().file_name()).collect();
    for who in modes() {
        let ws = workspace(who);
        let mount = format!("{}:/usr/local/agentbox-test-tools:ro", src.path().display());
        let script = "cat /usr/local/agentbox-test-tools/tool; ls /usr/local; touch /usr/local/x 2>/dev/null && echo WROTE; true";
        let out = run_in(who, &ws, &["--mount", &mount], &["sh", "-c", script]);
        assert!(out.status.success(), "as {who:?}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(stdout.starts_with("hello from the tool\n"), "as {who:?}: {stdout}");
        for name in &before {
            assert!(stdout.contains(name.to_str().unwrap()), "as {who:?}: {name:?} is missing: {stdout}");
        }
        assert!(!stdout.contains("WROTE"), "as {who:?}: /usr/local became writable");
    }
    assert!(!Path::new("/usr/local/agentbox-test-tools").exists(), "the host's tree changed");
}

/// Runs `agentbox run -w WS -- sh -c SCRIPT` for two scripts from a Python harness (so that what
/// it changes, a subreaper or a PID namespace, is its own), and says for each the exit code and
/// the exit status of an orphan the harness then reaped (`null`: it had none to reap). With
/// `subreaper`, the harness makes itself one first, so that it inherits what `run` leaves.
fn orphans_of_runs(
    who: As,
    ws: &Workspace,
    wrapper: &[&str],
    subreaper: bool,
    env: &[(&str, &str)],
) -> serde_json::Value {
    const HARNESS: &str = r#"
import ctypes, json, os, subprocess, sys
if sys.argv[1] == "1":
    assert ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
out = []
for script in ["exit 5", "echo early > early; (sleep 0.3; echo late > late) & exit 3"]:
    r = subprocess.run(sys.argv[2:] + ["sh", "-c", script], stdin=subprocess.DEVNULL, capture_output=True)
    try:
        _, status = os.waitpid(-1, 0)
        orphan = os.waitstatus_to_exitcode(status)
    except ChildProcessError:
        orphan = None
    out.append({"code": r.returncode, "orphan": orphan, "stderr": r.stderr.decode(errors="replace")})
print(json.dumps(out))
"#;
    let mut cmd = Command::new(wrapper.first().copied().unwrap_or("python3"));
    cmd.args(wrapper.iter().skip(1));
    if !wrapper.is_empty() {
        cmd.arg("python3");
    }
    cmd.args(["-c", HARNESS, if subreaper { "1" } else { "0" }]);
    // The harness runs `agentbox run` as `who` exactly as [`command`] would.
    let mut agentbox = command(who);
    agentbox.arg("run").arg("-w").arg(&ws.path).arg("--");
    cmd.arg(agentbox.get_program()).args(agentbox.get_args());
    cmd.envs(agentbox.get_envs().filter_map(|(k, v)| Some((k, v?))));
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "as {who:?}: the harness failed: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `run` returns once the command has ended and nothing else of the sandbox is left, without
/// waiting for the sandbox's init to tear down its mounts: that init is left to whoever reaps the
/// caller's orphans (here a subreaper, which reaps it with the command's status). A process the
/// command left in the background is another matter: `run` then waits until init has exited and
/// the kernel has killed that process, so it never acts after `run` returned. With
/// `AGENTBOX_RUN_REAP=1`, `run` reaps its init itself.
#[test]
fn run_returns_before_its_sandbox_is_torn_down_but_not_before_it_is_empty() {
    for who in modes() {
        for (env, left) in [(&[][..], Some(5)), (&[("AGENTBOX_RUN_REAP", "1")][..], None)] {
            let ws = workspace(who);
            let runs = orphans_of_runs(who, &ws, &[], true, env);
            assert_eq!(runs[0]["code"], 5, "as {who:?} {env:?}: {}", runs[0]["stderr"]);
            assert_eq!(runs[0]["orphan"].as_i64(), left, "as {who:?} {env:?}: {runs}");
            assert_eq!(runs[1]["code"], 3, "as {who:?} {env:?}: {}", runs[1]["stderr"]);
            assert!(
                runs[1]["orphan"].is_null(),
                "as {who:?} {env:?}: run returned before its init exited: {runs}"
            );
            assert!(ws.path.join("early").exists(), "as {who:?}: the command could not write its workspace");
            std::thread::sleep(Duration::from_millis(600));
            assert!(!ws.path.join("late").exists(), "as {who:?}: a process of the sandbox outlived run");
        }
    }
}

/// In a container whose pid 1 is the program that runs agentbox (here a Python harness as pid 1
/// of its own PID namespace), nothing would reap an init `run` left behind: `run` reaps it itself,
/// and no zombie is left per run.
#[test]
fn run_under_a_pid_1_that_does_not_reap_leaves_no_zombie() {
    if !is_root() {
        return; // a PID namespace of its own needs root (`unshare --pid`)
    }
    let ws = workspace(As::Caller);
    let runs = orphans_of_runs(As::Caller, &ws, &["unshare", "--pid", "--fork", "--mount-proc"], false, &[]);
    for (run, code) in [(&runs[0], 5), (&runs[1], 3)] {
        assert_eq!(run["code"], code, "{}", run["stderr"]);
        assert!(run["orphan"].is_null(), "run left its init to a pid 1 that does not reap: {runs}");
    }
}
