//! An agent's state beyond its directory: pause and resume.

use std::time::Duration;

use crate::agents::Agents;
use crate::server::Server;
use crate::support::*;

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
}

/// The state letter of every process of the agent's sandbox, as the host sees them.
fn process_states(a: &Agents, name: &str) -> String {
    let procs: Vec<serde_json::Value> = serde_json::from_str(&a.ok(&["top", name, "--json"])).unwrap();
    procs
        .iter()
        .filter_map(|p| p["pid"].as_i64())
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            stat.rsplit_once(')')?.1.trim_start().chars().next()
        })
        .collect()
}

/// Whether no process of the sandbox can run: stopped (`T`), or in an uninterruptible wait
/// (`D`: a vfork parent whose child is stopped) that ends in the stop it has pending.
fn all_stopped(a: &Agents, name: &str) -> bool {
    process_states(a, name).chars().all(|c| matches!(c, 'T' | 't' | 'D' | 'Z'))
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
