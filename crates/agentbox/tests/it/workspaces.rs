//! An agent's state beyond its directory: pause and resume.

use std::time::Duration;

use crate::agents::Agents;
use crate::server::Server;
use crate::support::*;

/// Each command fails, its stderr saying what is wrong.
fn refused(a: &Agents, cases: &[(&[&str], &str)]) {
    for (args, says) in cases {
        let out = a.run(args);
        assert!(!out.status.success() && text(&out.stderr).contains(says), "{args:?}: {}", text(&out.stderr));
    }
}

/// CPU ticks (user + system) of every process of an agent's sandbox, as the host counts them.
fn sandbox_ticks(a: &Agents, name: &str) -> (usize, u64) {
    let top = a.ok(&["top", name, "--json"]);
    let procs: Vec<serde_json::Value> = serde_json::from_str(&top).unwrap();
    let pids: Vec<i64> = procs.iter().filter_map(|p| p["pid"].as_i64()).collect();
    let ticks = pids
        .iter()
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let f: Vec<String> = stat.rsplit_once(')')?.1.split_whitespace().map(str::to_string).collect();
            Some(f[11].parse::<u64>().ok()? + f[12].parse::<u64>().ok()?)
        })
        .sum();
    (pids.len(), ticks)
}

/// The numbers the counter printed, in order.
fn counted(log: &str) -> Vec<u64> {
    log.lines().filter_map(|l| l.strip_prefix('n')?.parse().ok()).collect()
}

const BUSY: &str = "(while :; do :; done) & i=0; while :; do i=$((i+1)); echo n$i; sleep 0.02; done";

#[test]
fn pause_stops_every_process_and_resume_loses_nothing() {
    for who in modes() {
        let a = Agents::new(who);
        // A CPU burner in the background and a counter in the foreground.
        a.ok(&["spawn", "busy", "--", "sh", "-c", BUSY]);
        a.screen_until("busy", "n5");
        // And a burner started with `exec`: in the sandbox's PID namespace, not below its init.
        let _exec = KillOnDrop(
            a.cmd(&["exec", "busy", "sh", "-c", "while :; do :; done # exec-burner"]).spawn().unwrap(),
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let burner = loop {
            let found: Vec<i32> = host_processes_matching("# exec-burner")
                .into_iter()
                .filter(|p| {
                    std::fs::read_to_string(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.starts_with("sh\0"))
                })
                .collect();
            if let Some(p) = found.first() {
                break *p;
            }
            assert!(std::time::Instant::now() < deadline, "as {who:?}: the exec'd burner did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        let burner_ticks = || -> u64 {
            let stat = std::fs::read_to_string(format!("/proc/{burner}/stat")).unwrap_or_default();
            let f: Vec<&str> =
                stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
            f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
                + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
        };
        assert_eq!(a.ok(&["pause", "busy"]), "busy\n");
        let state = |a: &Agents| -> String {
            let v: serde_json::Value = serde_json::from_str(&a.ok(&["inspect", "busy", "--json"])).unwrap();
            v["agent"]["state"].as_str().unwrap_or_default().to_string()
        };
        assert_eq!(state(&a), "paused", "as {who:?}");
        assert!(a.ok(&["list"]).contains("paused"));
        // Frozen: no process of the sandbox gets CPU, and the counter stands still.
        std::thread::sleep(Duration::from_millis(300));
        let (procs, before) = sandbox_ticks(&a, "busy");
        let count_before = counted(&a.ok(&["logs", "busy"])).len();
        std::thread::sleep(Duration::from_secs(1));
        let (_, after) = sandbox_ticks(&a, "busy");
        assert!(procs >= 3, "as {who:?}: {procs} processes");
        assert_eq!(before, after, "as {who:?}: a paused sandbox used CPU");
        let exec_before = burner_ticks();
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            burner_ticks(),
            exec_before,
            "as {who:?}: a command started with exec ran on while paused"
        );
        assert_eq!(
            counted(&a.ok(&["logs", "busy"])).len(),
            count_before,
            "as {who:?}: it printed while paused"
        );
        // Mistakes and what a paused agent refuses.
        let again = a.run(&["pause", "busy", "nope"]);
        assert_eq!(again.status.code(), Some(1));
        assert!(
            text(&again.stderr).contains("busy: agent 'busy' is paused already"),
            "{}",
            text(&again.stderr)
        );
        assert!(text(&again.stderr).contains("nope"), "{}", text(&again.stderr));
        let exec = a.run(&["exec", "busy", "true"]);
        assert!(!exec.status.success() && text(&exec.stderr).contains("resume"), "{}", text(&exec.stderr));
        // Resumed: it goes on where it was, with every number in order.
        assert_eq!(a.ok(&["resume", "busy"]), "busy\n");
        assert_eq!(state(&a), "running");
        let target = count_before + 20;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while counted(&a.ok(&["logs", "busy"])).len() < target && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let (_, later) = sandbox_ticks(&a, "busy");
        assert!(later > after, "as {who:?}: resumed but no CPU used");
        let numbers = counted(&a.ok(&["logs", "busy"]));
        assert!(numbers.iter().zip(1..).all(|(n, i)| *n == i), "as {who:?}: output lost: {numbers:?}");
        let resumed_twice = a.run(&["resume", "busy"]);
        assert!(
            text(&resumed_twice.stderr).contains("is running, not paused"),
            "{}",
            text(&resumed_twice.stderr)
        );
        // A paused agent is stopped (its command gets SIGTERM once continued) and killed.
        a.ok(&["pause", "busy"]);
        a.ok(&["stop", "-t", "5", "busy"]);
        assert!(["exited", "killed"].contains(&state(&a).as_str()), "as {who:?}: {}", state(&a));
        a.ok(&["start", "busy"]);
        a.screen_until("busy", "n3");
        a.ok(&["pause", "busy"]);
        a.ok(&["kill", "busy"]);
        assert_eq!(state(&a), "killed");
        let journal = a.ok(&["history", "-n", "200"]);
        assert!(journal.contains("pause") && journal.contains("resume"), "{journal}");
        // Root has a freezer cgroup for every sandbox: the group is frozen at once.
        if who == As::Caller && is_root() {
            assert!(journal.contains("freezer cgroup"), "{journal}");
        }
    }
}

/// Waits until agent `name` is in `state`.
#[track_caller]
fn state_until(a: &Agents, name: &str, state: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while a.state(name) != state {
        assert!(std::time::Instant::now() < deadline, "{name} never became {state}: {}", a.state(name));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `pause --after IDLE`: idle that long, the agent is paused with its CPU standing still;
/// whatever is typed into it resumes it and gets its answer; output keeps it awake; restarts
/// keep the setting and `off` ends it.
#[test]
fn idle_agents_pause_and_input_wakes_them() {
    for who in modes() {
        let a = Agents::new(who);
        let echo = "while read l; do echo got-$l; done";
        a.ok(&["spawn", "idle", "--", "sh", "-c", echo]);
        a.ok(&["spawn", "talker", "--", "sh", "-c", "while :; do echo tick; sleep 0.1; done"]);
        a.ok(&["pause", "--after", "1s", "idle", "talker"]);
        assert!(a.ok(&["info", "idle"]).contains("pause after: 1s idle"), "{}", a.ok(&["info", "idle"]));
        state_until(&a, "idle", "paused");
        assert!(all_stopped(&a, "idle"), "as {who:?}: {}", process_states(&a, "idle"));
        assert_eq!(a.state("talker"), "running", "as {who:?}: an agent printing every 0.1 s was idle");
        a.ok(&["send", "idle", "hello"]);
        a.screen_until("idle", "got-hello");
        assert_eq!(a.state("idle"), "running");
        let journal = a.ok(&["history", "-n", "50"]);
        assert!(
            journal.contains("idle for 1s: frozen") && journal.contains("input arrived: thawed"),
            "as {who:?}: {journal}"
        );
        // Asleep again, and a restart keeps the setting.
        state_until(&a, "idle", "paused");
        a.ok(&["restart", "idle"]);
        state_until(&a, "idle", "paused");
        a.ok(&["pause", "--after", "off", "idle"]);
        a.ok(&["resume", "idle"]);
        std::thread::sleep(Duration::from_millis(2500));
        assert_eq!(a.state("idle"), "running", "as {who:?}: paused after `--after off`");
        refused(
            &a,
            &[
                (&["pause", "--after", "2x", "idle"], "not a duration"),
                (&["pause", "--after", "400d", "idle"], "longer than a year"),
                (&["pause", "--after", "1m", "nope"], "nope"),
            ],
        );
    }
}

/// The same through a server: the API, the remote CLI, and 409 for what cannot be.
#[test]
fn pause_and_resume_through_a_server() {
    let a = Agents::new(As::Caller);
    let srv = Server::start(&a);
    a.ok(&["spawn", "far", "--", "sh", "-c", BUSY]);
    a.screen_until("far", "n3");
    let client = Agents::new(As::Caller);
    let out = srv.remote(&client, &["pause", "far"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(srv.ok("GET", "/api/v1/agents/far", None)["state"], "paused");
    let (status, body) = srv.call("POST", "/api/v1/agents/far/pause", None);
    assert_eq!(status, 409, "{body}");
    assert_eq!(srv.ok("POST", "/api/v1/agents/far/resume", None)["state"], "running");
    let (status, _) = srv.call("POST", "/api/v1/agents/nope/resume", None);
    assert_eq!(status, 404);
    let out = srv.remote(&client, &["resume", "far"]);
    assert!(!out.status.success() && text(&out.stderr).contains("not paused"), "{}", text(&out.stderr));
    // Pausing when idle, through the API and the remote CLI: kept in the agent's spec.
    let (status, body) = srv.call("POST", "/api/v1/agents/far/pause?after=2x", None);
    assert_eq!(status, 400, "{body}");
    let out = srv.remote(&client, &["pause", "--after", "10m", "far"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let info: serde_json::Value = serde_json::from_str(&a.ok(&["info", "far", "--json"])).unwrap();
    let spec: serde_json::Value = serde_json::from_str(info["agent"]["spec"].as_str().unwrap()).unwrap();
    assert_eq!(spec["pause_after"]["secs"], 600, "{spec}");
    srv.ok("POST", "/api/v1/agents/far/pause?after=off", None);
}

/// The state letter of every process of the agent's sandbox, as the host sees them.
fn process_states(a: &Agents, name: &str) -> String {
    let procs: Vec<serde_json::Value> = serde_json::from_str(&a.ok(&["top", name, "--json"])).unwrap();
    procs
        .iter()
        .filter_map(|p| p["pid"].as_i64())
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
            // A task held by a v2 freezer sleeps (`S`) in the freezer's trap: `F` here.
            Some(if state == 'S' && in_frozen_v2_cgroup(p) { 'F' } else { state })
        })
        .collect()
}

/// Whether process `pid` is in a cgroup v2 directory that reports itself frozen.
fn in_frozen_v2_cgroup(pid: i64) -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let Some(mount) = mountinfo.lines().find(|l| l.contains(" - cgroup2 ")).and_then(|l| l.split(' ').nth(4))
    else {
        return false;
    };
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let Some(rel) = cgroup.lines().find_map(|l| l.strip_prefix("0::")) else { return false };
    let events = std::path::Path::new(mount).join(rel.trim_start_matches('/')).join("cgroup.events");
    std::fs::read_to_string(events).is_ok_and(|e| e.lines().any(|l| l == "frozen 1"))
}

/// Whether no process of the sandbox can run: stopped (`T`), held by a v2 freezer (`F`), or in
/// an uninterruptible wait (`D`: the v1 freezer's, or a vfork parent whose child is stopped)
/// that ends in the stop it has pending.
fn all_stopped(a: &Agents, name: &str) -> bool {
    process_states(a, name).chars().all(|c| matches!(c, 'T' | 't' | 'D' | 'Z' | 'F'))
}

/// Pauses and resumes of one agent released at one instant: each is refused or done whole, and
/// the state recorded is the state of the processes. Without the agent's lock around a pause,
/// a resume between its scan and its record left a running sandbox recorded `paused`.
#[test]
fn pauses_and_resumes_at_once_leave_the_record_true() {
    let a = Agents::new(As::Caller);
    a.ok(&["spawn", "race", "--", "sh", "-c", BUSY]);
    a.screen_until("race", "n3");
    for trial in 0..6 {
        let cmds = (0..12).map(|i| a.cmd(&[if i % 2 == 0 { "pause" } else { "resume" }, "race"])).collect();
        let outs = crate::races::at_once(cmds);
        for o in outs.iter().filter(|o| !o.status.success()) {
            let err = text(&o.stderr);
            assert!(err.contains("paused already") || err.contains("not paused"), "trial {trial}: {err}");
        }
        let state = a.state("race");
        let states = process_states(&a, "race");
        assert_eq!(
            state == "paused",
            all_stopped(&a, "race"),
            "trial {trial}: recorded {state}, processes {states}"
        );
    }
}

fn volume_list(a: &Agents) -> Vec<(String, Vec<String>)> {
    let v: Vec<serde_json::Value> = serde_json::from_str(&a.ok(&["volume", "ls", "--json"])).unwrap();
    v.iter()
        .map(|v| {
            let used =
                v["used_by"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().to_string()).collect();
            (v["name"].as_str().unwrap().to_string(), used)
        })
        .collect()
}

/// docker's named volumes: shared by the agents that name them, kept when they go, removed with
/// `volume rm` (never while in use, and without following a link an agent left in one).
#[test]
fn volumes_are_shared_and_outlive_their_agents() {
    for who in modes() {
        let a = Agents::new(who);
        assert_eq!(a.ok(&["volume", "create", "shared"]), "shared\n");
        // A spawn that names a volume no one made makes it.
        a.ok(&[
            "spawn",
            "writer",
            "-v",
            "shared:/data",
            "-v",
            "auto:/auto",
            "--",
            "sh",
            "-c",
            "echo hello > /data/msg && echo made > /auto/x && ln -s /etc/shadow /data/link && echo wrote",
        ]);
        a.ok(&["wait", "writer"]);
        assert!(a.ok(&["logs", "writer"]).contains("wrote"), "as {who:?}: {}", a.ok(&["logs", "writer"]));
        a.ok(&[
            "spawn",
            "reader",
            "-v",
            "shared:/in:ro",
            "--",
            "sh",
            "-c",
            "cat /in/msg; (echo x > /in/y) 2>/dev/null || echo read-only; sleep 1000",
        ]);
        a.screen_until("reader", "read-only");
        assert!(a.ok(&["logs", "reader"]).starts_with("hello\n"));
        // Each with the agents that bind it, running or (the writer) ended.
        let listed: Vec<(String, Vec<String>)> = volume_list(&a)
            .into_iter()
            .map(|(n, mut used)| {
                used.sort();
                (n, used)
            })
            .collect();
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            listed,
            [("auto".to_string(), names(&["writer"])), ("shared".to_string(), names(&["reader", "writer"]))],
            "as {who:?}"
        );
        let rm = a.run(&["volume", "rm", "shared"]);
        assert_eq!(rm.status.code(), Some(1));
        assert!(
            text(&rm.stderr).contains("in use by") && text(&rm.stderr).contains("reader"),
            "{}",
            text(&rm.stderr)
        );
        // The agents go; the volume stays for the next one.
        a.ok(&["rm", "-f", "reader", "writer"]);
        a.ok(&["spawn", "later", "-v", "shared:/data", "--", "cat", "/data/msg"]);
        a.ok(&["wait", "later"]);
        assert_eq!(a.ok(&["logs", "later"]), "hello\n");
        // A stopped agent still binds it (its next start would): not removed until it goes.
        let rm = a.run(&["volume", "rm", "shared"]);
        assert!(text(&rm.stderr).contains("in use by later"), "{}", text(&rm.stderr));
        a.ok(&["rm", "later"]);
        // Removed with their files; the link the agent left is removed, not followed.
        assert_eq!(a.ok(&["volume", "rm", "shared", "auto"]), "shared\nauto\n");
        assert!(volume_list(&a).is_empty());
        assert!(std::fs::symlink_metadata("/etc/shadow").is_ok_and(|m| m.is_file() && m.len() > 0));
        // Mistakes are named.
        a.ok(&["volume", "create", "v1"]);
        refused(
            &a,
            &[
                (&["volume", "create", "v1"], "exists already"),
                (&["volume", "create", "Bad!"], "is not a volume name"),
                (&["volume", "rm", "nope"], "no volume named 'nope'"),
                (&["spawn", "novol", "-v", "v1", "--", "true"], "a volume needs a path in the sandbox"),
            ],
        );
        assert!(a.run(&["info", "novol"]).status.code() != Some(0), "a refused spawn left an agent");
    }
}

/// Volumes through a server: the API (201, 409, 400, 404) and the remote CLI.
#[test]
fn volumes_through_a_server() {
    let a = Agents::new(As::Caller);
    let srv = Server::start(&a);
    let client = Agents::new(As::Caller);
    let out = srv.remote(&client, &["volume", "create", "far"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (status, body) = srv.call("POST", "/api/v1/volumes", Some(r#"{"name":"far"}"#));
    assert_eq!(status, 409, "{body}");
    let (status, body) = srv.call("POST", "/api/v1/volumes", Some(r#"{"name":"../x"}"#));
    assert_eq!(status, 400, "{body}");
    let made = srv.call("POST", "/api/v1/volumes", Some(r#"{"name":"near"}"#));
    assert_eq!(made.0, 201, "{}", made.1);
    let listed = text(&srv.remote(&client, &["volume", "ls"]).stdout);
    assert!(listed.contains("far") && listed.contains("near"), "{listed}");
    let (status, _) = srv.call("DELETE", "/api/v1/volumes/nope", None);
    assert_eq!(status, 404);
    let out = srv.remote(&client, &["volume", "rm", "far", "near"]);
    assert_eq!(text(&out.stdout), "far\nnear\n", "{}", text(&out.stderr));
    assert_eq!(srv.ok("GET", "/api/v1/volumes", None), serde_json::json!([]));
}

fn sha256(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum").arg(path).output().unwrap();
    text(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

/// docker cp both ways, running and stopped, and as tar streams. What the agent leaves in the
/// tree it sends (a link to a host secret, a FIFO) does not come out on the host, and a link it
/// planted where the person copies to is not written through.
#[test]
fn cp_copies_both_ways_and_lands_nothing_the_agent_planted() {
    for who in modes() {
        let a = Agents::new(who);
        a.ok(&[
            "spawn",
            "cpy",
            "--",
            "sh",
            "-c",
            "mkdir -p out/sub; echo hi > out/sub/f; head -c 3000000 /dev/urandom > out/big; \
             ln -s /etc/shadow out/secret; mkfifo out/ff; echo ready; sleep 1000",
        ]);
        a.screen_until("cpy", "ready");
        let host = workspace(who);
        let dst = host.path.join("copy");
        let out = a.run(&["cp", "cpy:out", dst.to_str().unwrap()]);
        assert!(out.status.success(), "as {who:?}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains("out/secret: a link") && err.contains("out/ff: a FIFO"), "{err}");
        assert_eq!(std::fs::read_to_string(dst.join("sub/f")).unwrap(), "hi\n");
        let inside = a.ok(&["exec", "cpy", "sha256sum", "out/big"]);
        assert!(inside.starts_with(&sha256(&dst.join("big"))), "as {who:?}: the big file differs");
        for gone in ["secret", "ff"] {
            assert!(std::fs::symlink_metadata(dst.join(gone)).is_err(), "as {who:?}: {gone} came out");
        }
        // Into the agent: a host tree, its link sent as a link.
        let src = host.path.join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("file"), "from the host\n").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", src.join("l")).unwrap();
        a.ok(&["cp", src.to_str().unwrap(), "cpy:/tmp/in"]);
        assert_eq!(a.ok(&["exec", "cpy", "cat", "/tmp/in/file"]), "from the host\n");
        assert_eq!(a.ok(&["exec", "cpy", "readlink", "/tmp/in/l"]), "/etc/hostname\n");
        // Tar streams, out and in.
        let tar = a.cmd(&["cp", "cpy:out/sub", "-"]).output().unwrap();
        assert!(tar.status.success(), "{}", text(&tar.stderr));
        let listed = std::process::Command::new("tar")
            .arg("-t")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                std::io::Write::write_all(c.stdin.as_mut().unwrap(), &tar.stdout)?;
                drop(c.stdin.take());
                c.wait_with_output()
            })
            .unwrap();
        assert!(text(&listed.stdout).contains("sub/f"), "{}", text(&listed.stdout));
        let mut put = a.cmd(&["cp", "-", "cpy:/tmp"]).stdin(std::process::Stdio::piped()).spawn().unwrap();
        std::io::Write::write_all(put.stdin.as_mut().unwrap(), &tar.stdout).unwrap();
        drop(put.stdin.take());
        assert!(put.wait().unwrap().success());
        assert_eq!(a.ok(&["exec", "cpy", "cat", "/tmp/sub/f"]), "hi\n");
        // The attack: the agent names a link in its workspace as what the person will copy to;
        // the copy is refused and the host directory it points at stays empty.
        let victim = workspace(who);
        let planted = format!("ln -s {} sub", victim.path.display());
        a.ok(&["exec", "cpy", "sh", "-c", &planted]);
        let ws = a.dir("cpy").join("workspace");
        let out = a.run(&["cp", "cpy:out/sub", ws.to_str().unwrap()]);
        assert!(!out.status.success(), "as {who:?}: copied through a planted link");
        assert!(text(&out.stderr).contains("nothing is written through it"), "{}", text(&out.stderr));
        let out = a.run(&["cp", "cpy:out/sub/f", ws.join("sub").to_str().unwrap()]);
        assert!(!out.status.success() && text(&out.stderr).contains("is a link"), "{}", text(&out.stderr));
        assert!(
            std::fs::read_dir(&victim.path).unwrap().next().is_none(),
            "as {who:?}: written through a link"
        );
        // Stopped: its files are still there to copy.
        a.ok(&["kill", "cpy"]);
        a.ok(&["cp", "cpy:out/sub/f", host.path.join("f2").to_str().unwrap()]);
        assert_eq!(std::fs::read_to_string(host.path.join("f2")).unwrap(), "hi\n");
        // Mistakes are named.
        refused(
            &a,
            &[
                (&["cp", "cpy:nope", "/tmp"], "Cannot stat"),
                (&["cp", "/tmp/x", "/tmp/y"], "one side must be an agent"),
                (&["cp", "ghost:x", "/tmp"], "ghost"),
            ],
        );
    }
}

/// `port`: a host loopback port reaches a server the agent runs on its own loopback, with its
/// network left at `none` (nothing else becomes reachable), as root and unprivileged; the
/// forward ends with the agent.
#[test]
fn port_reaches_a_server_inside_the_agent() {
    use std::io::BufRead;
    for who in modes() {
        let a = Agents::new(who);
        a.ok(&[
            "spawn",
            "web",
            "--",
            "sh",
            "-c",
            "echo served-from-inside > index.html; exec python3 -u -m http.server 8000 --bind 127.0.0.1",
        ]);
        a.screen_until("web", "Serving HTTP");
        let mut fwd = KillOnDrop(
            a.cmd(&["port", "web", "8000", "0"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut line = String::new();
        std::io::BufReader::new(fwd.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.split_whitespace().next().unwrap_or_default().to_string();
        assert!(
            line.trim_end().ends_with("-> web:8000") && addr.starts_with("127.0.0.1:"),
            "as {who:?}: {line}"
        );
        for _ in 0..2 {
            let mut resp = ureq::get(&format!("http://{addr}/index.html")).call().unwrap();
            assert_eq!(resp.body_mut().read_to_string().unwrap(), "served-from-inside\n", "as {who:?}");
        }
        // The agent ends: so does the forward.
        a.ok(&["kill", "web"]);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = fwd.0.try_wait().unwrap() {
                break s;
            }
            assert!(std::time::Instant::now() < deadline, "as {who:?}: the forward outlived the agent");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(status.success(), "as {who:?}");
        a.ok(&["spawn", "hostnet", "--network", "full", "--", "sleep", "1000"]);
        refused(
            &a,
            &[
                (&["port", "hostnet", "8000"], "on the host's network"),
                (&["port", "web", "8000"], "ports reach a running agent"),
                (&["port", "ghost", "8000"], "ghost"),
                (&["port", "web", "0"], "not a port"),
            ],
        );
    }
}

/// A port free on the host's loopback now (bound, then let go), below the kernel's ephemeral
/// range, where the outgoing connections of tests running alongside do not land.
fn free_port() -> u16 {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut seed = u64::from(std::process::id()) ^ now;
    loop {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let port = 20_000 + (seed >> 33) as u16 % 10_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The body at `url`, once it answers (`None` after a few seconds of refusals).
fn fetch(url: &str) -> Option<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut r) = ureq::get(url).call() {
            return r.body_mut().read_to_string().ok();
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `spawn --publish HOSTPORT:PORT` forwards for as long as the agent runs, again after a
/// restart, and not after it ends; a host port in use is refused before anything is made.
#[test]
fn published_ports_follow_the_agent() {
    for who in modes() {
        let a = Agents::new(who);
        let port = free_port();
        let publish = format!("{port}:8000");
        let serve = "echo run-$(cat /proc/sys/kernel/random/uuid | cut -c1-4) > index.html; \
                     exec python3 -u -m http.server 8000 --bind 127.0.0.1";
        a.ok(&["spawn", "pub", "--publish", &publish, "--", "sh", "-c", serve]);
        a.screen_until("pub", "Serving HTTP");
        let url = format!("http://127.0.0.1:{port}/index.html");
        let first = fetch(&url).unwrap_or_else(|| panic!("as {who:?}: nothing on {url}"));
        assert!(first.starts_with("run-"), "as {who:?}: {first}");
        let info: serde_json::Value = serde_json::from_str(&a.ok(&["info", "pub", "--json"])).unwrap();
        assert_eq!(info["spec"]["publish"][0]["host_port"], port, "{info}");
        // Restarted: a new sandbox, the same published port.
        a.ok(&["restart", "pub"]);
        a.screen_until("pub", "Serving HTTP");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let now = fetch(&url).unwrap_or_default();
            if now.starts_with("run-") && now != first {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "as {who:?}: still {now:?} after the restart");
            std::thread::sleep(Duration::from_millis(100));
        }
        // Taken: refused, and nothing made.
        let out = a.run(&["spawn", "again", "--publish", &publish, "--", "true"]);
        assert!(
            !out.status.success() && text(&out.stderr).contains(&format!("127.0.0.1:{port}")),
            "{}",
            text(&out.stderr)
        );
        assert!(!a.dir("again").exists());
        // The agent ends: the port closes.
        a.ok(&["kill", "pub"]);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            assert!(std::time::Instant::now() < deadline, "as {who:?}: the port outlived the agent");
            std::thread::sleep(Duration::from_millis(100));
        }
        refused(
            &a,
            &[
                (&["spawn", "bad", "--publish", "0", "--", "true"], "1 to 65535"),
                (
                    &["spawn", "bad", "--publish", "40001:2", "--publish", "40001:3", "--", "true"],
                    "published twice",
                ),
                (
                    &["spawn", "bad", "--network", "full", "--publish", "40002:9", "--", "true"],
                    "--network full",
                ),
            ],
        );
    }
}

/// `cp` through a server: the same verb, both ways, the tar streamed over `.../archive`; the
/// viewer token cannot read an agent's files; a missing path is the sandbox's own words.
#[test]
fn cp_through_a_server() {
    let a = Agents::new(As::Caller);
    let srv = Server::start(&a);
    a.ok(&[
        "spawn",
        "far",
        "--",
        "sh",
        "-c",
        "mkdir -p out/sub; echo hi > out/sub/f; echo ready; sleep 1000",
    ]);
    a.screen_until("far", "ready");
    let client = Agents::new(As::Caller);
    let host = tempfile::tempdir().unwrap();
    let dst = host.path().join("got");
    let out = srv.remote(&client, &["cp", "far:out", dst.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(dst.join("sub/f")).unwrap(), "hi\n");
    std::fs::write(host.path().join("up.txt"), "up\n").unwrap();
    let out =
        srv.remote(&client, &["cp", host.path().join("up.txt").to_str().unwrap(), "far:/tmp/landed.txt"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(a.ok(&["exec", "far", "cat", "/tmp/landed.txt"]), "up\n");
    let out = srv.remote(&client, &["cp", "far:nope", host.path().to_str().unwrap()]);
    assert!(!out.status.success() && text(&out.stderr).contains("Cannot stat"), "{}", text(&out.stderr));
    let (status, _) = srv.call_as(Some(&srv.viewer), "GET", "/api/v1/agents/far/archive?path=out", None);
    assert_eq!(status, 403);
    let (status, body) = srv.call("GET", "/api/v1/agents/far/archive?path=..%2F..%2F..", None);
    assert_eq!(status, 400, "{body}");
}

/// A copy into an agent that does not exist, with a body, through a server: a 404, and the
/// server is still there for the next request (its helper ended before reading the body).
#[test]
fn a_failed_copy_in_leaves_the_server_up() {
    let a = Agents::new(As::Caller);
    let srv = Server::start(&a);
    let body = "x".repeat(1 << 20);
    for _ in 0..3 {
        let (status, _) = srv.call("PUT", "/api/v1/agents/ghost/archive?path=/tmp", Some(&body));
        assert_eq!(status, 404);
    }
    let (status, _) = srv.call("GET", "/api/v1/agents", None);
    assert_eq!(status, 200);
}

/// A download whose sandbox `tar` is stuck (stopped), and whose client goes away: the copy's
/// helper is ended when the response is dropped, so no server thread or process stays held.
#[test]
fn a_client_that_goes_away_frees_a_stuck_copy() {
    use std::io::{Read, Write};
    let a = Agents::new(As::Caller);
    let srv = Server::start(&a);
    a.ok(&["spawn", "hold", "--", "sh", "-c", "head -c 60000000 /dev/urandom > big; echo ready; sleep 1000"]);
    a.screen_until("hold", "ready");
    let marker = "__archive out hold big".to_string();
    let mut s = std::net::TcpStream::connect(srv.addr()).unwrap();
    write!(
        s,
        "GET /api/v1/agents/hold/archive?path=big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        srv.token
    )
    .unwrap();
    let mut first = vec![0u8; 4096];
    let n = s.read(&mut first).unwrap();
    assert!(
        String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&first[..n])
    );
    assert!(!host_processes_matching(&marker).is_empty(), "no helper while the copy runs");
    // The sandbox's tar stuck (stopped from outside here: the agent itself may not signal it).
    let tars = host_processes_matching("-cf - -- big");
    assert!(!tars.is_empty(), "no tar");
    for t in tars {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(t), nix::sys::signal::Signal::SIGSTOP);
    }
    drop(s);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !host_processes_matching(&marker).is_empty() {
        assert!(std::time::Instant::now() < deadline, "the copy's helper outlived its client");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(srv.call("GET", "/api/v1/agents", None).0, 200);
}

/// A web app inside the agent: it answers each request with the request's own head (so a test
/// sees what reached it), and turns an `Upgrade: echo` into a stream it echoes in capitals.
const APP: &str = r#"
import socket, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 3000))
s.listen(16)
print("app-listening", flush=True)
def serve(c):
    data = b""
    while b"\r\n\r\n" not in data:
        more = c.recv(4096)
        if not more:
            return
        data += more
    head = data.split(b"\r\n\r\n")[0]
    if b"upgrade: echo" in head.lower():
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        while True:
            d = c.recv(4096)
            if not d:
                break
            c.sendall(d.upper())
    else:
        body = b"seen:" + head
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// One raw HTTP/1.1 exchange with the server (the `Host` header is the test's to choose): the
/// status, the headers (lowercased) and the body; the connection is returned for an upgrade.
fn raw_http(addr: &str, request: &str) -> (u16, String, String, std::net::TcpStream) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // The head, then as much body as Content-Length says.
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the connection closed before a whole head: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_lowercase();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let len: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
    while got.len() < head_end + len {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&got[head_end..head_end + len]).to_string();
    (status, head, body, s)
}

/// `/agents/NAME/ports/PORT/`: a browser gets the agent's web app on an origin of its own
/// (`PORT-NAME.localhost`), let in by a one-time ticket the dashboard's session fetched, and the
/// server's credentials never reach the app; a program gets it under the API with its token.
/// HTTP and an upgraded (WebSocket-like) stream both go through; as root and unprivileged.
#[test]
fn an_agents_web_app_opens_on_an_origin_of_its_own() {
    for who in modes() {
        let a = Agents::new(who);
        let srv = Server::start(&a);
        let addr = srv.addr();
        let port = addr.rsplit(':').next().unwrap().to_string();
        a.ok(&["spawn", "web", "--", "python3", "-u", "-c", APP]);
        a.screen_until("web", "app-listening");
        assert_eq!(srv.ok("GET", "/api/v1/agents/web/ports", None)["ports"], serde_json::json!([3000]));
        let origin = format!("3000-web.localhost:{port}");
        let get = |host: &str, path: &str, extra: &str| {
            raw_http(
                &addr,
                &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"),
            )
        };

        // Without a grant the port's origin lets nothing through, and serves none of the server.
        let (status, _, body, _) = get(&origin, "/", "");
        assert_eq!(status, 401, "as {who:?}: {body}");
        let (status, _, body, _) =
            get(&origin, "/api/v1/agents", &format!("Authorization: Bearer {}\r\n", srv.token));
        assert_eq!(status, 401, "as {who:?}: the port's origin answered with the server's API: {body}");

        // A ticket (controller only) becomes this origin's cookie, once.
        let (status, _) =
            srv.call_as(Some(&srv.viewer), "POST", "/api/v1/agents/web/ports/3000/ticket", None);
        assert_eq!(status, 403);
        let ticket = srv.ok("POST", "/api/v1/agents/web/ports/3000/ticket", None);
        assert_eq!(ticket["host"], "3000-web.localhost");
        let ticket = ticket["ticket"].as_str().unwrap().to_string();
        let enter = |host: &str| {
            let form = format!("ticket={ticket}");
            raw_http(
                &addr,
                &format!(
                    "POST /.agentbox/enter HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
                    form.len()
                ),
            )
        };
        let (status, _, _, _) = enter(&format!("3001-web.localhost:{port}"));
        assert_eq!(status, 403, "as {who:?}: a ticket for port 3000 let into port 3001");
        // (That spent it: tickets are good once, whatever the outcome.)
        let ticket = srv.ok("POST", "/api/v1/agents/web/ports/3000/ticket", None)["ticket"]
            .as_str()
            .unwrap()
            .to_string();
        let form = format!("ticket={ticket}");
        let enter_req = format!(
            "POST /.agentbox/enter HTTP/1.1\r\nHost: {origin}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        );
        let (status, head, _, _) = raw_http(&addr, &enter_req);
        assert_eq!(status, 303, "as {who:?}: {head}");
        let cookie = head
            .lines()
            .find_map(|l| l.strip_prefix("set-cookie: "))
            .and_then(|c| c.split(';').next())
            .unwrap()
            .to_string();
        assert!(head.contains("httponly") && head.contains("samesite=lax"), "{head}");
        let (status, _, _, _) = raw_http(&addr, &enter_req);
        assert_eq!(status, 403, "as {who:?}: a ticket was good twice");

        // In: the app answers; it sees its own cookies, not the server's.
        let (status, head, body, _) = get(&origin, "/page?x=1", &format!("Cookie: app=1; {cookie}\r\n"));
        assert_eq!(status, 200, "as {who:?}: {head}{body}");
        assert!(body.starts_with("seen:GET /page?x=1 HTTP/1.1"), "{body}");
        assert!(body.contains("app=1") && !body.contains("agentbox_port_session"), "as {who:?}: {body}");
        // That cookie is for this port alone.
        let (status, _, _, _) =
            get(&format!("3001-web.localhost:{port}"), "/", &format!("Cookie: {cookie}\r\n"));
        assert_eq!(status, 401);

        // An upgraded connection is joined through both ways.
        let (status, head, _, mut stream) = raw_http(
            &addr,
            &format!("GET /echo HTTP/1.1\r\nHost: {origin}\r\nCookie: {cookie}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"),
        );
        assert_eq!(status, 101, "as {who:?}: {head}");
        {
            use std::io::{Read, Write};
            stream.write_all(b"hello through").unwrap();
            let mut buf = [0u8; 64];
            let mut got = Vec::new();
            while got.len() < 13 {
                let n = stream.read(&mut buf).unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got, b"HELLO THROUGH");
        }

        // The forwarder behind the proxy (on host loopback) lets in nobody without its key.
        let log = std::fs::read_to_string(a.dir("web").join("publish.log")).unwrap_or_default();
        let fwd = log.lines().rev().find_map(|l| l.split(" -> ").next()).unwrap().to_string();
        {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(&fwd).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s.write_all(b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got);
            assert!(
                got.is_empty(),
                "as {who:?}: the forwarder at {fwd} answered without its key: {}",
                String::from_utf8_lossy(&got)
            );
        }
        // A program, under the API with the controller's token (never passed on).
        let auth = format!("Authorization: Bearer {}\r\n", srv.token);
        let (status, head, body, _) = get(&addr, "/api/v1/agents/web/ports/3000/api/x?y=2", &auth);
        assert_eq!(status, 200, "as {who:?}: {body}");
        assert!(body.starts_with("seen:GET /api/x?y=2 "), "{body}");
        assert!(
            !body.contains(&srv.token) && head.contains("content-security-policy: sandbox"),
            "{body}\n{head}"
        );
        let (status, _, _, _) = get(
            &addr,
            "/api/v1/agents/web/ports/3000/",
            &format!("Authorization: Bearer {}\r\n", srv.viewer),
        );
        assert_eq!(status, 403, "as {who:?}: the viewer reached the app");
        let (status, _, _, _) = get(&addr, "/api/v1/agents/web/ports/3000/", "");
        assert_eq!(status, 401);
        let (status, _, body, _) = get(&addr, "/api/v1/agents/web/ports/99999/", &auth);
        assert_eq!(status, 400, "{body}");
        let (status, _, body, _) = get(&addr, "/api/v1/agents/web/ports/3001/", &auth);
        assert_eq!(status, 502, "as {who:?}: nothing listens on 3001: {body}");
        assert!(body.contains("listening"), "{body}");
        // A restart is a new network: the proxy follows it.
        a.ok(&["restart", "web"]);
        a.screen_until("web", "app-listening");
        let (status, _, body, _) = get(&origin, "/again", &format!("Cookie: {cookie}\r\n"));
        assert_eq!(status, 200, "as {who:?}: after a restart: {body}");
        a.ok(&["kill", "web"]);
        let (status, _, body, _) = get(&addr, "/api/v1/agents/web/ports/3000/", &auth);
        assert_eq!(status, 409, "as {who:?}: {body}");
    }
}
