//! Agents that live on: spawn, send, screen, logs, attach through a real PTY, kill, wait, rm.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// A private AGENTBOX_HOME for one test, owned by the identity that uses it.
pub(crate) struct Agents {
    _dir: tempfile::TempDir,
    pub(crate) home: PathBuf,
    pub(crate) who: As,
}

impl Agents {
    pub(crate) fn new(who: As) -> Self {
        Self::named(who, "home")
    }

    /// An AGENTBOX_HOME whose last component is `name`.
    pub(crate) fn named(who: As, name: &str) -> Self {
        let dir = tempfile::Builder::new().prefix("abx-").tempdir().unwrap();
        let home = std::fs::canonicalize(dir.path()).unwrap().join(name);
        std::fs::create_dir(&home).unwrap();
        if who == As::Nobody {
            std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        Self { _dir: dir, home, who }
    }

    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut c = command(self.who);
        c.env("AGENTBOX_HOME", &self.home).args(args);
        c
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    #[track_caller]
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "as {:?}: agentbox {args:?}: {}{}",
            self.who,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    pub(crate) fn dir(&self, name: &str) -> PathBuf {
        self.home.join("agents").join(name)
    }

    /// Polls `agentbox screen` until it contains `needle`.
    #[track_caller]
    pub(crate) fn screen_until(&self, name: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.ok(&["screen", name]);
            if s.contains(needle) {
                return s;
            }
            assert!(Instant::now() < deadline, "as {:?}: screen never showed {needle:?}:\n{s}", self.who);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn state(&self, name: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["info", name, "--json"])).unwrap();
        v["agent"]["state"].clone()
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        let _ = self.run(&["killall"]);
    }
}

#[test]
fn spawn_send_screen_logs_kill() {
    for who in modes() {
        let a = Agents::new(who);
        let prompt = "printf 'Proceed? [y/N] '; read answer; echo \"answer=$answer\"; exec sleep 300";
        assert_eq!(a.ok(&["spawn", "q1", "-t", "team=red", "--", "sh", "-c", prompt]), "q1\n");
        assert_eq!(a.state("q1"), "running");
        a.screen_until("q1", "Proceed? [y/N]");
        a.ok(&["send", "q1", "y"]);
        let screen = a.screen_until("q1", "answer=y");
        assert!(screen.starts_with("Proceed? [y/N] y"), "{screen}");
        let logs = a.ok(&["logs", "q1"]);
        assert!(logs.contains("answer=y") && !logs.contains('\r'), "as {who:?}: {logs:?}");
        assert!(a.ok(&["logs", "q1", "--raw"]).contains("\r\n"));
        assert_eq!(a.ok(&["logs", "q1", "-n", "1"]), "answer=y\n");

        let listed: serde_json::Value = serde_json::from_str(&a.ok(&["list", "--json"])).unwrap();
        assert_eq!(listed[0]["name"], "q1");
        assert_eq!(listed[0]["tags"]["team"], "red");
        assert_eq!(a.ok(&["list", "-q", "--tag", "team=red"]), "q1\n");
        assert_eq!(a.ok(&["list", "-q", "--tag", "team=blue"]), "");
        assert_eq!(a.ok(&["list", "-q", "--status", "exited"]), "");

        // Owner-only state: the socket and the agent's directory.
        let dir = a.dir("q1");
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(dir.join("sock")).unwrap().permissions().mode() & 0o777, 0o600);

        assert_eq!(a.ok(&["kill", "q1"]), "q1\n");
        assert_eq!(a.state("q1"), "killed");
        let out = a.run(&["wait", "q1"]);
        assert_eq!(out.status.code(), Some(137));
        // The screen survives the agent.
        assert!(a.ok(&["screen", "q1"]).contains("answer=y"));
        let events: serde_json::Value = serde_json::from_str(&a.ok(&["history", "--json"])).unwrap();
        let kinds: Vec<&str> =
            events.as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["spawn", "start", "killed"], "as {who:?}");
    }
}

#[test]
fn output_of_a_command_that_exits_at_once_is_complete() {
    for who in modes() {
        let a = Agents::new(who);
        a.ok(&["spawn", "burst", "--", "sh", "-c", "seq 1 20000; exit 4"]);
        let out = a.run(&["wait", "burst", "--timeout", "60"]);
        assert_eq!(out.status.code(), Some(4), "as {who:?}: {}", text(&out.stderr));
        let logs = a.ok(&["logs", "burst"]);
        let lines: Vec<&str> = logs.lines().collect();
        assert_eq!(lines.len(), 20000, "as {who:?}");
        assert_eq!(lines[19999], "20000");
        assert!(a.ok(&["list"]).contains("exited (4)"));
    }
}

#[test]
fn kill_leaves_nothing_running() {
    for (i, who) in modes().into_iter().enumerate() {
        let a = Agents::new(who);
        let marker = format!("31340.{}{}", std::process::id(), i);
        let script = format!("setsid sleep {marker} & sleep {marker} & echo up; exec sleep {marker}");
        a.ok(&["spawn", "k1", "--", "sh", "-c", &script]);
        a.screen_until("k1", "up");
        // "up" is printed before the last sleep is exec'd: wait for all three.
        let deadline = Instant::now() + Duration::from_secs(10);
        while host_processes_starting_with(&format!("sleep {marker}")).len() < 3 {
            assert!(Instant::now() < deadline, "as {who:?}: the sleeps never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        let supervisor = a.state("k1");
        assert_eq!(supervisor, "running");
        a.ok(&["kill", "k1"]);
        assert_eq!(host_processes_matching(&format!("sleep {marker}")), Vec::<i32>::new(), "as {who:?}");
        assert_eq!(host_processes_matching("__supervise k1"), Vec::<i32>::new());
    }
}

#[test]
fn agents_survive_the_terminal_that_spawned_them() {
    let a = Agents::new(As::Caller);
    // spawn from a session whose controlling terminal then hangs up.
    let pty = nix::pty::openpty(None, None).unwrap();
    let spawn_cmd = format!("{} spawn hup -- sh -c 'echo alive; exec sleep 300'", bins().agentbox.display());
    let mut cmd = Command::new("setsid");
    cmd.args(["-c", "sh", "-c", &spawn_cmd]).env("AGENTBOX_HOME", &a.home);
    cmd.stdin(Stdio::from(pty.slave.try_clone().unwrap()))
        .stdout(Stdio::from(pty.slave.try_clone().unwrap()));
    let status = cmd.status().unwrap();
    assert!(status.success());
    drop(cmd);
    drop(pty.slave);
    drop(pty.master); // hang up
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(a.state("hup"), "running");
    a.screen_until("hup", "alive");
}

#[test]
fn wait_times_out_and_rm_refuses_running_agents() {
    let a = Agents::new(As::Caller);
    a.ok(&["spawn", "w1", "--", "sleep", "300"]);
    let out = a.run(&["wait", "w1", "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(124));
    let out = a.run(&["wait", "w1", "--timeout", "18446744073709551615"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("ten years"), "{}", text(&out.stderr));
    let out = a.run(&["rm", "w1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is running"), "{}", text(&out.stderr));
    assert!(a.dir("w1").exists());
    a.ok(&["rm", "--force", "w1"]);
    assert!(!a.dir("w1").exists());
    let out = a.run(&["info", "w1"]);
    assert!(text(&out.stderr).contains("no agent named 'w1'"), "{}", text(&out.stderr));

    a.ok(&["spawn", "c1", "--", "true"]);
    a.ok(&["spawn", "c2", "--", "sleep", "300"]);
    a.run(&["wait", "c1"]);
    assert_eq!(a.ok(&["clean"]), "c1\n");
    assert!(!a.dir("c1").exists() && a.dir("c2").exists());
}

#[test]
fn bad_names_and_missing_agents_are_explained() {
    let a = Agents::new(As::Caller);
    for bad in ["Upper", "a_b", "x/y", "..", "sp ace"] {
        let out = a.run(&["spawn", bad, "--", "true"]);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        assert!(text(&out.stderr).contains("invalid agent name"), "{bad}: {}", text(&out.stderr));
    }
    for verb in [
        vec!["info", "ghost"],
        vec!["logs", "ghost"],
        vec!["send", "ghost", "x"],
        vec!["kill", "ghost"],
        vec!["attach", "ghost"],
    ] {
        let out = a.run(&verb);
        assert_eq!(out.status.code(), Some(1), "{verb:?}");
        assert!(text(&out.stderr).contains("no agent named 'ghost'"), "{verb:?}: {}", text(&out.stderr));
    }
    a.ok(&["spawn", "dup", "--", "sleep", "300"]);
    let out = a.run(&["spawn", "dup", "--", "true"]);
    assert!(text(&out.stderr).contains("already exists"), "{}", text(&out.stderr));
    // A spawn that cannot start leaves nothing behind.
    let out = a.run(&["spawn", "nocmd", "--", "no-such-program-x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("command not found"), "{}", text(&out.stderr));
    assert!(!a.dir("nocmd").exists());
    assert!(a.run(&["info", "nocmd"]).status.code() == Some(1));
}

#[test]
fn agents_cannot_see_agentbox_state_or_each_other() {
    let a = Agents::new(As::Caller);
    a.ok(&["spawn", "one", "--", "sleep", "300"]);
    std::fs::write(a.dir("one").join("workspace/secret"), "canary").unwrap();
    let probe = format!(
        "ls {home} 2>&1; cat {home}/agents/one/workspace/secret 2>&1; ls {home}/state.db 2>&1; echo done",
        home = a.home.display()
    );
    a.ok(&["spawn", "two", "--", "sh", "-c", &probe]);
    a.run(&["wait", "two"]);
    let logs = a.ok(&["logs", "two"]);
    assert!(!logs.contains("canary") && !logs.contains("state.db\n"), "{logs}");
    assert!(logs.contains("No such file") && logs.contains("done"), "{logs}");
}

/// A spawn with a command forks its supervisor, which still shows `agentbox __supervise NAME`
/// (its argument area rewritten, the spawn's longer one zero-padded); one with no room for that
/// (no command) execs it. Both run, are seen alive, and are killed alike.
#[test]
fn the_supervisor_is_forked_when_it_can_be_and_shows_its_role() {
    let a = Agents::new(As::Caller);
    a.ok(&["spawn", "forked", "--", "sh", "-c", "echo up; exec sleep 600"]);
    a.ok(&["spawn", "exd"]);
    let args_of = |name: &str| -> Vec<Vec<u8>> {
        let pids = host_processes_matching(&format!("__supervise {name}"));
        assert_eq!(pids.len(), 1, "{name}: {pids:?}");
        let raw = std::fs::read(format!("/proc/{}/cmdline", pids[0])).unwrap();
        raw.split(|b| *b == 0).map(<[u8]>::to_vec).collect()
    };
    let forked = args_of("forked");
    assert_eq!(&forked[1..3], &[b"__supervise".to_vec(), b"forked".to_vec()]);
    assert!(forked[3..].iter().all(|a| a.is_empty()) && forked.len() > 4, "not forked: {forked:?}");
    let exd = args_of("exd");
    assert_eq!(&exd[1..], &[b"__supervise".to_vec(), b"exd".to_vec(), Vec::new()], "exec'd: {exd:?}");
    a.screen_until("forked", "up");
    assert_eq!(a.state("forked"), "running");
    assert_eq!(a.state("exd"), "running");
    a.ok(&["kill", "forked", "exd"]);
    assert!(host_processes_matching("__supervise forked").is_empty());
    assert_eq!(a.state("forked"), "killed");
}

#[test]
fn supervisor_death_is_detected_and_takes_the_sandbox_along() {
    let a = Agents::new(As::Caller);
    let marker = format!("31341.{}", std::process::id());
    a.ok(&["spawn", "s1", "--memory", "64m", "--", "sh", "-c", &format!("exec sleep {marker}")]);
    let info: serde_json::Value = serde_json::from_str(&a.ok(&["info", "s1", "--json"])).unwrap();
    let pid = info["agent"]["supervisor_pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !host_processes_matching(&format!("sleep {marker}")).is_empty() {
        assert!(Instant::now() < deadline, "sandbox outlived its supervisor");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(a.state("s1"), "failed");
    assert!(a.ok(&["list"]).contains("failed"));
    // The cgroups its supervisor made (as root: a freezer, and the limits') were left behind;
    // the first change to the agent that finds its supervisor dead removes them.
    let made = format!("agentbox-{pid}-");
    let leftovers = || -> Vec<PathBuf> {
        ["freezer", "memory", "pids", "unified"]
            .iter()
            .flat_map(|h| std::fs::read_dir(format!("/sys/fs/cgroup/{h}")).into_iter().flatten().flatten())
            .filter(|e| e.file_name().to_string_lossy().starts_with(&made))
            .map(|e| e.path())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while leftovers()
        .iter()
        .any(|d| std::fs::read_to_string(d.join("cgroup.procs")).is_ok_and(|p| !p.is_empty()))
    {
        assert!(Instant::now() < deadline, "the dead sandbox's processes stayed in its cgroups");
        std::thread::sleep(Duration::from_millis(20));
    }
    a.ok(&["rm", "s1"]);
    assert_eq!(leftovers(), Vec::<PathBuf>::new());
}

pub(crate) fn read_until(master: &mut std::fs::File, seen: &mut Vec<u8>, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(seen).contains(needle) {
        assert!(Instant::now() < deadline, "never saw {needle:?} in {:?}", String::from_utf8_lossy(seen));
        match master.read(&mut buf) {
            Ok(0) | Err(_) => std::thread::sleep(Duration::from_millis(10)),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

pub(crate) fn attach_on_pty(a: &Agents, args: &[&str]) -> (std::process::Child, std::fs::File) {
    let pty = nix::pty::openpty(
        Some(&nix::pty::Winsize { ws_row: 30, ws_col: 100, ws_xpixel: 0, ws_ypixel: 0 }),
        None,
    )
    .unwrap();
    let mut cmd = a.cmd(args);
    cmd.stdin(Stdio::from(pty.slave.try_clone().unwrap()))
        .stdout(Stdio::from(pty.slave.try_clone().unwrap()));
    let child = cmd.spawn().unwrap();
    drop(cmd);
    drop(pty.slave);
    (child, std::fs::File::from(pty.master))
}

#[test]
fn attach_replays_streams_types_and_detaches() {
    for who in modes() {
        let a = Agents::new(who);
        a.ok(&[
            "spawn",
            "at",
            "--",
            "sh",
            "-c",
            "echo before-attach; while read l; do echo \"echo:$l\"; done",
        ]);
        a.screen_until("at", "before-attach");

        let (mut controller, mut master) = attach_on_pty(&a, &["attach", "at"]);
        let (mut observer, mut obs_master) = attach_on_pty(&a, &["attach", "at", "--read-only"]);
        let mut seen = Vec::new();
        read_until(&mut master, &mut seen, "before-attach"); // the screen is replayed
        let mut obs_seen = Vec::new();
        read_until(&mut obs_master, &mut obs_seen, "before-attach");

        master.write_all(b"typed-in\r").unwrap();
        read_until(&mut master, &mut seen, "echo:typed-in");
        read_until(&mut obs_master, &mut obs_seen, "echo:typed-in"); // several clients see it live
                                                                     // An observer's keys go nowhere.
        obs_master.write_all(b"from-observer\r").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(!a.ok(&["logs", "at"]).contains("from-observer"));
        // The attach resized the agent's terminal to the client's.
        assert!(a.ok(&["screen", "at", "--json"]).contains("echo:typed-in"));

        master.write_all(&[0x1d]).unwrap(); // Ctrl-]
        let status = controller.wait().unwrap();
        assert!(status.success(), "as {who:?}");
        read_until(&mut master, &mut seen, "[detached from at]");
        obs_master.write_all(&[0x1d]).unwrap();
        assert!(observer.wait().unwrap().success());
        assert_eq!(a.state("at"), "running", "as {who:?}: detaching must not stop the agent");

        // A custom detach key, and an attach that ends because the agent exits.
        let (mut c2, mut m2) = attach_on_pty(&a, &["attach", "at", "--detach-key", "ctrl-q"]);
        let mut s2 = Vec::new();
        read_until(&mut m2, &mut s2, "echo:typed-in");
        // Ctrl-] is no longer the detach key: it is typed into the agent like any byte.
        m2.write_all(b"\x1d\r").unwrap();
        read_until(&mut m2, &mut s2, "echo:\x1d");
        m2.write_all(b"\x04").unwrap(); // EOF on an empty line ends the read loop: the agent exits 0
        let status = c2.wait().unwrap();
        assert_eq!(status.code(), Some(0), "as {who:?}");
        read_until(&mut m2, &mut s2, "exited with status 0");
        assert_eq!(a.state("at"), "exited");
    }
}

#[test]
fn swarm_broadcast_and_killall() {
    let a = Agents::new(As::Caller);
    let script = "while read l; do echo \"heard:$l\"; done";
    assert_eq!(
        a.ok(&["swarm", "bee", "3", "-t", "hive=1", "--", "sh", "-c", script]),
        "bee-1\nbee-2\nbee-3\n"
    );
    a.ok(&["spawn", "other", "--", "sh", "-c", script]);
    let out = a.run(&["broadcast", "--tag", "hive=1", "buzz"]);
    assert!(text(&out.stderr).contains("sent to 3 agent(s)"), "{}", text(&out.stderr));
    for n in ["bee-1", "bee-2", "bee-3"] {
        a.screen_until(n, "heard:buzz");
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(!a.ok(&["screen", "other"]).contains("buzz"));
    a.ok(&["killall", "--tag", "hive=1"]);
    assert_eq!(a.ok(&["list", "-q", "--status", "running"]), "other\n");
}

#[test]
fn from_dir_copies_and_mount_binds() {
    let a = Agents::new(As::Caller);
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("README"), "project").unwrap();
    std::os::unix::fs::symlink("/etc/shadow", src.path().join("link")).unwrap();
    a.ok(&[
        "spawn",
        "copy",
        "--from-dir",
        src.path().to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "cat README; echo x > new",
    ]);
    a.run(&["wait", "copy"]);
    assert!(a.ok(&["logs", "copy"]).contains("project"));
    assert!(!src.path().join("new").exists(), "--from-dir must copy, not bind");
    let copied = a.dir("copy").join("workspace/link");
    assert!(
        std::fs::symlink_metadata(&copied).unwrap().file_type().is_symlink(),
        "symlinks are copied as links"
    );

    let bound = workspace(As::Caller);
    a.ok(&["spawn", "bind", "--mount", bound.path.to_str().unwrap(), "--", "sh", "-c", "echo y > made-here"]);
    a.run(&["wait", "bind"]);
    assert_eq!(std::fs::read_to_string(bound.path.join("made-here")).unwrap(), "y\n");
    let out = a.run(&["spawn", "rootws", "--mount", "/", "--", "true"]);
    assert!(text(&out.stderr).contains("refusing workspace /"), "{}", text(&out.stderr));
    assert!(!Path::new(&a.dir("rootws")).exists());
}

#[test]
fn prompt_file_is_typed_once_the_agent_runs() {
    let a = Agents::new(As::Caller);
    let prompt = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(prompt.path(), "fix the failing test").unwrap();
    let script = "printf 'task> '; read task; echo \"working on: $task\"; exec sleep 300";
    a.ok(&["spawn", "p1", "--prompt", prompt.path().to_str().unwrap(), "--", "sh", "-c", script]);
    a.screen_until("p1", "working on: fix the failing test");
    let out = a.run(&["spawn", "p2", "--prompt", "/nonexistent/prompt", "--", "true"]);
    assert!(text(&out.stderr).contains("--prompt /nonexistent/prompt"), "{}", text(&out.stderr));
    assert!(!a.dir("p2").exists());
    assert_eq!(a.ok(&["root"]).trim(), a.home.to_str().unwrap());
}

#[test]
fn restart_clone_rename_keep_the_workspace() {
    let a = Agents::new(As::Caller);
    let prompt = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(prompt.path(), "again").unwrap();
    let script = "read x; echo \"$x\" >> runs; echo runs=$(wc -l < runs); exec sleep 300";
    a.ok(&[
        "spawn",
        "r1",
        "--prompt",
        prompt.path().to_str().unwrap(),
        "-t",
        "k=v",
        "--",
        "sh",
        "-c",
        script,
    ]);
    a.screen_until("r1", "runs=1");
    // restart kills the running agent, starts it on the same workspace and replays the prompt.
    assert_eq!(a.ok(&["restart", "r1"]), "r1\n");
    a.screen_until("r1", "runs=2");
    a.ok(&["kill", "r1"]);

    assert_eq!(a.ok(&["clone", "r1", "r2"]), "r2\n");
    let listed: serde_json::Value = serde_json::from_str(&a.ok(&["list", "--json"])).unwrap();
    let r2 = listed.as_array().unwrap().iter().find(|x| x["name"] == "r2").unwrap();
    assert_eq!(r2["state"], "created");
    assert_eq!(r2["tags"]["k"], "v");
    assert_eq!(std::fs::read_to_string(a.dir("r2").join("workspace/runs")).unwrap(), "again\nagain\n");
    a.ok(&["restart", "r2"]);
    a.screen_until("r2", "runs=3");
    // The source is untouched by its clone.
    assert_eq!(std::fs::read_to_string(a.dir("r1").join("workspace/runs")).unwrap(), "again\nagain\n");
    a.ok(&["kill", "r2"]);

    let out = a.run(&["rename", "r1", "r2"]);
    assert!(text(&out.stderr).contains("already exists"), "{}", text(&out.stderr));
    a.ok(&["restart", "r1"]);
    let out = a.run(&["rename", "r1", "r9"]);
    assert!(text(&out.stderr).contains("is running"), "{}", text(&out.stderr));
    a.ok(&["kill", "r1"]);
    assert_eq!(a.ok(&["rename", "r1", "r9"]), "r9\n");
    assert!(!a.dir("r1").exists() && a.dir("r9").join("workspace/runs").exists());
    a.ok(&["restart", "r9"]);
    a.screen_until("r9", "runs=4");
    let info: serde_json::Value = serde_json::from_str(&a.ok(&["info", "r9", "--json"])).unwrap();
    assert_eq!(info["spec"]["hostname"], "r9");
    assert!(info["spec"]["workspace"].as_str().unwrap().ends_with("/agents/r9/workspace"));
    let kinds: Vec<String> =
        serde_json::from_str::<serde_json::Value>(&a.ok(&["history", "--json", "-e", "clone"]))
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["agent"].as_str().unwrap().to_string())
            .collect();
    assert_eq!(kinds, ["r2"]);
}

#[test]
fn ps_and_stats_measure_the_sandboxed_processes() {
    let a = Agents::new(As::Caller);
    a.ok(&["spawn", "busy", "--", "sh", "-c", "while :; do :; done"]);
    a.ok(&["spawn", "idle", "--", "sleep", "300"]);
    a.ok(&["spawn", "done", "--", "sh", "-c", "head -c 5000 /dev/zero > f"]);
    a.run(&["wait", "done"]);
    let rows: serde_json::Value = serde_json::from_str(&a.ok(&["ps", "--json"])).unwrap();
    let row = |n: &str| rows.as_array().unwrap().iter().find(|r| r["name"] == n).cloned();
    let busy = row("busy").unwrap();
    assert!(busy["cpu_percent"].as_f64().unwrap() > 20.0, "{busy}");
    assert!(busy["processes"].as_u64().unwrap() >= 2, "init and the shell: {busy}");
    assert!(busy["rss_bytes"].as_u64().unwrap() > 0);
    let idle = row("idle").unwrap();
    assert!(idle["cpu_percent"].as_f64().unwrap() < 20.0, "{idle}");
    assert!(row("done").is_none(), "stopped agents only with --all");
    let all: serde_json::Value = serde_json::from_str(&a.ok(&["ps", "--all", "--json"])).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 3);
    let stats: serde_json::Value = serde_json::from_str(&a.ok(&["stats", "--json"])).unwrap();
    assert_eq!(stats["agents"], 3);
    assert_eq!(stats["running"], 2);
    assert!(stats["workspace_bytes"].as_u64().unwrap() >= 5000, "{stats}");
}

#[test]
fn exec_runs_inside_the_agents_sandbox() {
    for (i, who) in modes().into_iter().enumerate() {
        let a = Agents::new(who);
        a.ok(&["spawn", "x1", "--", "sh", "-c", "echo from-agent > mark; exec sleep 300"]);
        a.screen_until("x1", "");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !a.dir("x1").join("workspace/mark").exists() {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(20));
        }
        let script = "cat mark; hostname; id -u; ls /proc | grep -c '^[0-9]'; cat /proc/1/cmdline | tr -d '\\0'; echo; \
                      grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; cat /etc/shadow 2>&1; touch /usr/x 2>&1; true";
        let out = a.run(&["exec", "x1", "--", "sh", "-c", script]);
        let o = text(&out.stdout);
        assert!(o.starts_with("from-agent\nx1\n1000\n"), "as {who:?}: {o}{}", text(&out.stderr));
        assert!(o.contains("agentbox-init\n"), "the agent's PID namespace: {o}");
        assert!(o.contains("CapEff:\t0000000000000000") && o.contains("NoNewPrivs:\t1"), "{o}");
        assert!(
            o.contains("/etc/shadow: Permission denied") && o.contains("'/usr/x': Read-only file system"),
            "{o}"
        );
        // Exit codes and stdin.
        assert_eq!(a.run(&["exec", "x1", "--", "sh", "-c", "exit 9"]).status.code(), Some(9));
        assert_eq!(a.run(&["exec", "x1", "--", "no-such-program"]).status.code(), Some(127));
        let mut child = a
            .cmd(&["exec", "-i", "x1", "--", "sh", "-c", "read l; echo got:$l"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"piped\n").unwrap();
        assert_eq!(text(&child.wait_with_output().unwrap().stdout), "got:piped\n");
        let out = a.run(&["exec", "x1", "--", "sh", "-c", "read l; echo got:$l"]);
        assert_eq!(text(&out.stdout), "got:\n", "without -i stdin is empty");
        // What exec started dies with the agent.
        let marker = format!("31342.{}{i}", std::process::id());
        let mut bg = KillOnDrop(a.cmd(&["exec", "x1", "--", "sleep", &marker]).spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(10);
        // The exec CLI's own arguments mention the marker: wait for `sleep` itself.
        while host_processes_starting_with(&format!("sleep {marker}")).is_empty() {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(20));
        }
        a.ok(&["kill", "x1"]);
        assert_eq!(bg.0.wait().unwrap().code(), Some(137), "as {who:?}");
        assert_eq!(host_processes_matching(&format!("sleep {marker}")), Vec::<i32>::new());
        let out = a.run(&["exec", "x1", "--", "true"]);
        assert!(text(&out.stderr).contains("is killed"), "{}", text(&out.stderr));
    }
}

#[test]
fn diff_never_runs_what_the_agent_planted() {
    require!("git");
    let a = Agents::new(As::Caller);
    let src = Repo::new();
    src.commit("a", "a\n", "init");
    let marker = tempfile::tempdir().unwrap();
    let m = marker.path().display();
    // The agent edits a file, adds one with a terminal escape in its name, and plants code that a
    // host-side `git status` would run: an fsmonitor, hooks, and a clean filter.
    let script = format!(
        "echo changed > a; touch \"$(printf 'evil\\033]0;x\\007')\"; \
         printf '[core]\\n\\tfsmonitor = touch {m}/fsmonitor\\n[filter \"x\"]\\n\\tclean = touch {m}/filter\\n' >> .git/config; \
         echo 'a filter=x' > .gitattributes; mkdir -p .git/hooks; \
         printf '#!/bin/sh\\ntouch {m}/hook\\n' > .git/hooks/post-index-change; chmod +x .git/hooks/post-index-change"
    );
    a.ok(&["spawn", "d", "--from-dir", src.path().to_str().unwrap(), "--", "sh", "-c", &script]);
    a.run(&["wait", "d"]);
    let out = a.ok(&["diff", "d"]);
    assert!(out.contains("M a\n") && out.contains("A .gitattributes\n"), "{out}");
    assert!(out.contains("A evil\\x1b]0;x\\x07"), "names are escaped: {out:?}");
    assert!(!out.contains('\x1b'), "no raw escape reaches the terminal: {out:?}");
    assert!(out.contains("git status (run in a sandbox)") && out.contains(" M a"), "{out}");
    assert!(std::fs::read_dir(marker.path()).unwrap().next().is_none(), "planted code ran on the host");
    let json: serde_json::Value = serde_json::from_str(&a.ok(&["diff", "d", "--json"])).unwrap();
    assert!(json.as_array().unwrap().iter().any(|c| c["change"] == "M" && c["path"] == "a"));
    // A fresh agent has no changes.
    a.ok(&["spawn", "clean", "--from-dir", src.path().to_str().unwrap(), "--", "true"]);
    a.run(&["wait", "clean"]);
    assert_eq!(a.ok(&["diff", "clean", "--no-git"]), "");
}

#[test]
fn pre_and_post_spawn_hooks() {
    use std::os::unix::fs::PermissionsExt;
    let a = Agents::new(As::Caller);
    let hooks = a.home.join("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let log = a.home.join("hook.log");
    for which in ["pre-spawn", "post-spawn"] {
        let script = format!("#!/bin/sh\necho \"{which} $1 $2 $AGENTBOX_NAME\" >> {}\n", log.display());
        std::fs::write(hooks.join(which), script).unwrap();
        std::fs::set_permissions(hooks.join(which), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    a.ok(&["spawn", "h1", "--", "true"]);
    let ws = a.dir("h1").join("workspace");
    let ws = std::fs::canonicalize(ws).unwrap();
    let got = std::fs::read_to_string(&log).unwrap();
    assert_eq!(got, format!("pre-spawn h1 {0} h1\npost-spawn h1 {0} h1\n", ws.display()));
    // A failing pre-spawn hook stops the spawn and leaves nothing behind.
    std::fs::write(hooks.join("pre-spawn"), "#!/bin/sh\nexit 3\n").unwrap();
    let out = a.run(&["spawn", "h2", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("pre-spawn hook") && text(&out.stderr).contains("exit status: 3"),
        "{}",
        text(&out.stderr)
    );
    assert!(!a.dir("h2").exists());
    assert_eq!(a.run(&["info", "h2"]).status.code(), Some(1));
}

#[test]
fn grid_and_watch() {
    require!("tmux");
    let a = Agents::new(As::Caller);
    a.ok(&["spawn", "g1", "--", "sh", "-c", "printf '\\033]2;g2\\007'; echo grid-one; exec sleep 300"]);
    a.ok(&["spawn", "g2", "--", "sh", "-c", "echo grid-two; exec sleep 300"]);
    a.screen_until("g1", "grid-one");
    a.screen_until("g2", "grid-two");
    let frame = a.ok(&["watch", "--once"]);
    assert!(frame.contains("g1") && frame.contains("| grid-one") && frame.contains("| grid-two"), "{frame}");
    // On a terminal: arrows select, Enter attaches (Ctrl-] comes back), q quits.
    let (mut child, mut master) = attach_on_pty(&a, &["watch", "-n", "0.3"]);
    let mut seen = Vec::new();
    read_until(&mut master, &mut seen, "> g1");
    master.write_all(b"\x1b[B").unwrap();
    seen.clear();
    read_until(&mut master, &mut seen, "> g2");
    master.write_all(b"\r").unwrap();
    seen.clear();
    read_until(&mut master, &mut seen, "grid-two");
    master.write_all(b"\x1d").unwrap();
    seen.clear();
    read_until(&mut master, &mut seen, "q quits");
    master.write_all(b"q").unwrap();
    assert!(child.wait().unwrap().success());

    // A private tmux server for the test.
    let tmux_dir = tempfile::tempdir().unwrap();
    let mut grid = a.cmd(&["grid", "--no-attach"]);
    grid.env("TMUX_TMPDIR", tmux_dir.path());
    let out = grid.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let tmux = |args: &[&str]| {
        let o = Command::new("tmux").args(args).env("TMUX_TMPDIR", tmux_dir.path()).output().unwrap();
        text(&o.stdout)
    };
    // One window of tiled panes, each titled with its agent and showing it live.
    assert_eq!(tmux(&["list-windows", "-t", "agentbox-grid", "-F", "#W"]), "agents-1\n");
    // The names come from the panes' own option: g1 printed a title naming g2, to no effect.
    let panes = tmux(&["list-panes", "-t", "agentbox-grid:agents-1", "-F", "#{@agent} #{pane_id}"]);
    assert_eq!(panes.lines().count(), 2, "{panes}");
    let pane_of = |name: &str| {
        panes
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{panes}"))
            .split(' ')
            .nth(1)
            .unwrap()
            .to_string()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !tmux(&["capture-pane", "-p", "-t", &pane_of("g2")]).contains("grid-two") {
        assert!(Instant::now() < deadline, "{}", tmux(&["capture-pane", "-p", "-t", &pane_of("g2")]));
        std::thread::sleep(Duration::from_millis(50));
    }
    // The panes did not resize the agents for everyone else: no size mark since g1 started
    // (g2 was resized once, by the person attached to it from `watch` above).
    let marks = std::fs::read_to_string(a.dir("g1").join("log.sizes")).unwrap();
    assert_eq!(marks.lines().count(), 1, "g1 was resized: {marks}");
    tmux(&["kill-server"]);
    assert_eq!(a.state("g1"), "running", "closing the grid leaves the agents running");
}

#[test]
fn purge_asks_or_needs_force() {
    let a = Agents::new(As::Caller);
    a.ok(&["spawn", "p1", "--", "sleep", "300"]);
    a.ok(&["spawn", "p2", "--", "true"]);
    let out = a.run(&["purge"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--force"), "{}", text(&out.stderr));
    assert!(a.dir("p1").exists());
    // On a terminal it asks; "n" keeps everything.
    let pty = nix::pty::openpty(None, None).unwrap();
    let mut cmd = a.cmd(&["purge"]);
    cmd.stdin(Stdio::from(pty.slave.try_clone().unwrap()))
        .stderr(Stdio::from(pty.slave.try_clone().unwrap()));
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    let mut seen = Vec::new();
    read_until(&mut master, &mut seen, "[y/N]");
    master.write_all(b"n\r").unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(1));
    assert_eq!(a.state("p1"), "running");
    assert_eq!(a.ok(&["purge", "--force"]), "p1\np2\n");
    assert!(!a.dir("p1").exists() && !a.dir("p2").exists());
    assert_eq!(a.ok(&["list", "-q"]), "");
}

#[test]
fn identity_signs_commits_and_verify_checks_them() {
    require!("git", "ssh-keygen");
    let a = Agents::new(As::Caller);
    let src = Repo::new();
    src.commit("a", "a\n", "before the agent");
    let out = a.run(&[
        "spawn",
        "id1",
        "--identity",
        "--from-dir",
        src.path().to_str().unwrap(),
        "--",
        "sleep",
        "300",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("id1 is did:key:z6Mk"), "{}", text(&out.stderr));
    let info: serde_json::Value = serde_json::from_str(&a.ok(&["info", "id1", "--json"])).unwrap();
    assert!(info["identity"].as_str().unwrap().starts_with("did:key:z6Mk"));

    // The agent commits: git inside signs with the agent's key, unasked.
    let shown = a.ok(&[
        "exec",
        "id1",
        "--",
        "sh",
        "-c",
        "echo b > b && git add b && git commit -qm 'agent work' && git log --show-signature -1",
    ]);
    assert!(shown.contains("Good \"git\" signature for id1@agentbox.local"), "{shown}");
    let out = a.ok(&["verify", "id1"]);
    assert!(
        out.contains("ok ") && out.contains("agent work") && out.contains("1 commit(s) signed by id1"),
        "{out}"
    );
    assert!(!out.contains("before the agent"), "commits from before the spawn are not the agent's: {out}");

    // An unsigned commit, and one signed with a key the agent swapped in: verify fails on both.
    a.ok(&[
        "exec",
        "id1",
        "--",
        "git",
        "-c",
        "commit.gpgsign=false",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "unsigned",
    ]);
    let swap = "rm -f ~/.ssh/agentbox_ed25519 ~/.ssh/agentbox_ed25519.pub && \
                ssh-keygen -q -t ed25519 -N '' -C forger -f ~/.ssh/agentbox_ed25519 && \
                git commit -q --allow-empty -m forged";
    a.ok(&["exec", "id1", "--", "sh", "-c", swap]);
    let out = a.run(&["verify", "id1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let o = text(&out.stdout);
    assert!(o.contains("unsigned (not signed)"), "{o}");
    assert!(o.lines().any(|l| l.starts_with("NOT OURS") && l.contains("forged")), "{o}");
    assert!(o.contains("1 commit(s) signed by id1") && o.contains("2 not"), "{o}");
    // An agent without an identity says so.
    a.ok(&["spawn", "plain", "--", "true"]);
    let out = a.run(&["verify", "plain"]);
    assert!(text(&out.stderr).contains("has no identity"), "{}", text(&out.stderr));
}

#[test]
fn from_git_clones_at_a_ref_inside_a_sandbox() {
    require!("git");
    let a = Agents::new(As::Caller);
    let src = Repo::new();
    src.commit("f", "v1\n", "one");
    src.git(&["tag", "v1"]);
    src.commit("f", "v2\n", "two");
    let url = src.path().to_str().unwrap();
    a.ok(&["spawn", "g-head", "--from-git", url, "--", "cat", "f"]);
    a.ok(&["spawn", "g-tag", "--from-git", url, "--ref", "v1", "--", "cat", "f"]);
    a.run(&["wait", "g-head"]);
    a.run(&["wait", "g-tag"]);
    assert_eq!(a.ok(&["logs", "g-head"]), "v2\n");
    assert_eq!(a.ok(&["logs", "g-tag"]), "v1\n");
    assert!(a.dir("g-tag").join("workspace/.git").is_dir());
    for (args, needle) in [
        (vec!["--from-git", "/nonexistent/repo"], "--from-git /nonexistent/repo"),
        (vec!["--from-git", url, "--ref", "no-such-ref"], "failed"),
        (vec!["--from-git", "relative/path"], "absolute local path"),
        (vec!["--ref", "v1"], "--from-git"),
    ] {
        let mut full = vec!["spawn", "bad"];
        full.extend(args.iter());
        full.extend(["--", "true"]);
        let out = a.run(&full);
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        assert!(text(&out.stderr).contains(needle), "{args:?}: {}", text(&out.stderr));
        assert!(!a.dir("bad").exists(), "{args:?} left state behind");
    }
}

#[test]
fn send_file_no_enter_follow_logs_and_ansi_screen() {
    let a = Agents::new(As::Caller);
    let script = "printf '\\033[1;31mred\\033[0m\\n'; while read l; do echo \"line:$l\"; [ \"$l\" = end ] && exit 0; done";
    a.ok(&["spawn", "s1", "--", "sh", "-c", script]);
    a.screen_until("s1", "red");
    // --no-enter types without Enter: nothing is read until the line is finished.
    a.ok(&["send", "s1", "--no-enter", "par"]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!a.ok(&["screen", "s1"]).contains("line:par"));
    a.ok(&["send", "s1", "tial"]);
    a.screen_until("s1", "line:partial");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "from-file\r").unwrap();
    a.ok(&["send", "s1", "--file", file.path().to_str().unwrap(), "--no-enter"]);
    a.screen_until("s1", "line:from-file");
    // The formatted screen keeps colours; the plain one does not.
    let ansi = a.ok(&["screen", "s1", "--ansi"]);
    assert!(ansi.contains("\x1b[") && ansi.contains("red"), "{ansi:?}");
    assert!(!a.ok(&["screen", "s1"]).contains('\x1b'));
    // logs -f follows until the agent exits, then returns.
    let mut follow = KillOnDrop(a.cmd(&["logs", "-f", "s1"]).stdout(Stdio::piped()).spawn().unwrap());
    std::thread::sleep(Duration::from_millis(200));
    a.ok(&["send", "s1", "end"]);
    let mut out = String::new();
    follow.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(follow.0.wait().unwrap().success());
    assert!(out.contains("line:partial") && out.ends_with("line:end\n"), "{out:?}");
    let out = a.run(&["send", "s1", "late"]);
    assert!(text(&out.stderr).contains("nothing is reading its terminal"), "{}", text(&out.stderr));
}

/// The internal roles (the supervisor, the spawner, the runner, the VM's helpers) are not part
/// of the CLI: not in its help, not in shell completion. One started with wrong arguments is
/// refused before it does anything.
#[test]
fn internal_roles_stay_out_of_the_cli() {
    let a = Agents::new(As::Caller);
    for args in [&["--help"][..], &["completion", "bash"], &["completion", "zsh"], &["completion", "fish"]] {
        let out = a.ok(args);
        for role in ["__supervise", "__tasks", "__vmm", "__vmexec", "__vmfwd", "Internal"] {
            assert!(!out.contains(role), "{args:?} shows {role}");
        }
    }
    for bad in [&["__supervise"][..], &["__supervise", "a", "b"], &["__vmfwd", "x"], &["__bogus"]] {
        let out = a.run(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(text(&out.stderr).contains("internal role"), "{bad:?}: {}", text(&out.stderr));
    }
}

/// `-v HOST:SANDBOX` with a relative HOST (`./data`) is taken from the current directory; a
/// plain name is a volume, as with docker's -v, even where a directory has that name.
#[test]
fn a_relative_volume_is_taken_from_the_current_directory() {
    let a = Agents::new(As::Caller);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/f.txt"), "from the host\n").unwrap();
    for (name, source) in [("relvol", "./data:/data:ro"), ("namedvol", "data:/data:ro")] {
        let out = a
            .cmd(&["spawn", name, "-v", source, "--", "sh", "-c", "cat /data/f.txt || echo empty"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        a.ok(&["wait", name]);
    }
    assert_eq!(a.ok(&["logs", "relvol"]), "from the host\n");
    assert!(a.ok(&["logs", "namedvol"]).ends_with("empty\n"), "{}", a.ok(&["logs", "namedvol"]));
}

/// `exec` works whatever the agent's network, as root and unprivileged; a detached agent's
/// terminal is xterm-256color with true colour unless the person says otherwise.
#[test]
fn exec_works_for_every_network_mode_and_agents_get_a_colour_terminal() {
    for who in modes() {
        let a = Agents::new(who);
        for (name, mode) in [("n-none", "none"), ("n-full", "full"), ("n-proxy", "proxy")] {
            a.ok(&["spawn", name, "--network", mode, "--", "sleep", "1000"]);
            let out = a.run(&["exec", name, "--", "sh", "-c", "echo in-$TERM-$COLORTERM"]);
            assert!(out.status.success(), "as {who:?}, --network {mode}: {}", text(&out.stderr));
            assert_eq!(text(&out.stdout), "in-xterm-256color-truecolor\n", "as {who:?}, {mode}");
        }
        a.ok(&["spawn", "n-own", "-e", "TERM=vt100", "--", "sleep", "1000"]);
        assert_eq!(a.ok(&["exec", "n-own", "--", "sh", "-c", "echo $TERM"]), "vt100\n");
        a.ok(&["killall", "--force"]);
    }
}

/// `send` types as a person would: the text as a paste when the application asked for bracketed
/// paste, and Enter in a read of its own after it (an Ink TUI takes text and Enter arriving
/// together as a paste and does not submit it). Without the mode, the text as it is. An
/// application busy for longer than any fixed pause (node on a loaded machine) still reads the
/// Enter on its own: it is typed once the text was shown.
#[test]
fn send_types_text_then_enter_as_its_own_key() {
    require!("python3");
    let a = Agents::new(As::Caller);
    let reader = r#"
import os, sys, time, tty
mode = sys.argv[1]
if mode == "paste":
    sys.stdout.write("\x1b[?2004h")
tty.setraw(0)
sys.stdout.write("ready\r\n"); sys.stdout.flush()
while True:
    if mode == "busy":
        time.sleep(0.4)
    chunk = os.read(0, 4096)
    sys.stdout.write("chunk:" + repr(chunk) + "\r\n"); sys.stdout.flush()
"#;
    for mode in ["paste", "plain", "busy"] {
        let name = format!("typing-{mode}");
        a.ok(&["spawn", &name, "--", "python3", "-c", reader, mode]);
        a.screen_until(&name, "ready");
        a.ok(&["send", &name, "fix the bug"]);
        let screen = a.screen_until(&name, r"chunk:b'\r'");
        let want = match mode {
            "paste" => r"chunk:b'\x1b[200~fix the bug\x1b[201~'",
            _ => "chunk:b'fix the bug'",
        };
        assert!(screen.contains(want), "{mode}: the text did not arrive on its own:\n{screen}");
    }
}

/// The processes whose command line is exactly `argv`.
fn processes_running(argv: &[&str]) -> Vec<i32> {
    let want = argv.join("\0") + "\0";
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want.as_bytes()))
        .collect()
}

/// The supervisor opens the agent's log and binds its socket while the sandbox sets itself up.
/// When that fails (here the log's path is a directory), the sandbox it launched is killed: the
/// start fails with the reason, and no process of it is left running.
#[test]
fn a_start_that_fails_beside_its_launched_sandbox_leaves_no_process() {
    for who in [As::Caller, As::Nobody] {
        let a = Agents::new(who);
        let argv = ["sleep", "98765"];
        a.ok(&["spawn", "w", "--", argv[0], argv[1]]);
        a.ok(&["kill", "w"]);
        let log = a.dir("w").join("log");
        std::fs::remove_file(&log).unwrap();
        std::fs::create_dir(&log).unwrap();
        let out = a.run(&["restart", "w"]);
        let err = text(&out.stderr);
        assert!(!out.status.success() && err.contains("cannot open the log"), "as {who:?}: {err}");
        // A sandbox left running would have exec'd its command by now.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(processes_running(&argv), Vec::<i32>::new(), "as {who:?}: the sandbox outlived its start");
        std::fs::remove_dir(&log).unwrap();
        a.ok(&["restart", "w"]);
        a.ok(&["kill", "w"]);
    }
}

/// A supervisor forked by its spawn launches the sandbox before it opens the store. A start it
/// refuses before any launch (a limit it cannot enforce: uid 65534 has no cpu cgroup it may write
/// here) still opens the store to record why: the spawn fails with the reason, the journal has the
/// supervisor's `failed` and the spawn's `spawn-failed`, and no agent is left.
#[test]
fn a_spawn_refused_before_its_launch_is_recorded_and_leaves_no_agent() {
    for who in modes() {
        let a = Agents::new(who);
        let out = a.run(&["spawn", "c", "--cpus", "0.5", "--", "sleep", "100"]);
        if out.status.success() {
            // This identity may write a cpu cgroup (root): the limit is enforced instead.
            a.ok(&["kill", "c"]);
            continue;
        }
        let err = text(&out.stderr);
        assert!(err.contains("cannot enforce --cpus"), "as {who:?}: {err}");
        assert!(!a.dir("c").exists(), "as {who:?}: the agent's directory was left");
        assert!(!a.run(&["info", "c"]).status.success(), "as {who:?}: the agent was left recorded");
        let history = a.ok(&["history"]);
        for event in ["failed", "spawn-failed"] {
            let seen = history
                .lines()
                .any(|l| l.split_whitespace().nth(2) == Some(event) && l.contains("cannot enforce --cpus"));
            assert!(seen, "as {who:?}: no {event} with the reason in the journal:\n{history}");
        }
    }
}
