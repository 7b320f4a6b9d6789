//! docker and tmux habits: `stop` (SIGTERM, grace, SIGKILL) and `start`, several names (or
//! `--tag`) per verb with one line per failure, `exec NAME CMD` without `--`, `inspect`.

use crate::agents::Agents;
use crate::server::Server;
use crate::support::*;

const GRACEFUL: &str = r#"trap 'echo got-term; exit 3' TERM; echo up; while :; do sleep 0.1; done"#;
const STUBBORN: &str = r#"trap '' TERM; echo up; while :; do sleep 0.1; done"#;

#[test]
fn stop_asks_then_kills_and_start_brings_them_back() {
    for who in modes() {
        let a = Agents::new(who);
        a.ok(&["spawn", "grace", "--restart", "on-failure", "--", "sh", "-c", GRACEFUL]);
        a.ok(&["spawn", "stub", "--tag", "team=x", "--", "sh", "-c", STUBBORN]);
        a.ok(&["spawn", "plain", "--tag", "team=x", "--", "sleep", "1000"]);
        for n in ["grace", "stub"] {
            a.screen_until(n, "up");
        }
        // Several names: each done, the unknown one named, exit status 1.
        let out = a.run(&["stop", "-t", "1", "grace", "nope", "stub"]);
        assert_eq!(out.status.code(), Some(1), "as {who:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "grace\nstub\n");
        assert_eq!(text(&out.stderr).lines().count(), 1, "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("nope"), "{}", text(&out.stderr));
        // The one that handles SIGTERM ended by itself (and is not restarted: it was asked to);
        // the one that ignores it was killed after the grace period.
        let info = |n: &str| -> serde_json::Value {
            serde_json::from_str::<serde_json::Value>(&a.ok(&["inspect", n, "--json"])).unwrap()["agent"]
                .clone()
        };
        assert_eq!(
            (info("grace")["state"].as_str(), info("grace")["exit_code"].as_i64()),
            (Some("exited"), Some(3))
        );
        assert!(a.ok(&["logs", "grace"]).contains("got-term"));
        assert_eq!(info("stub")["state"], "killed");
        std::thread::sleep(std::time::Duration::from_millis(500));
        assert_eq!(info("grace")["state"], "exited", "as {who:?}: a stopped agent was restarted");
        // docker's --format habit.
        let listed = a.ok(&["list", "--format", "{{.Name}}:{{.State}}:{{.ExitCode}}"]);
        assert!(listed.lines().any(|l| l == "grace:exited:3"), "{listed}");
        let bad = a.run(&["list", "--format", "{{.Nmae}}"]);
        assert!(!bad.status.success() && text(&bad.stderr).contains("unknown field '{{.Nmae}}'"));
        // By tag.
        assert_eq!(a.ok(&["stop", "--tag", "team=x", "-t", "1"]), "stub\nplain\n");
        assert_eq!(info("plain")["exit_code"].as_i64(), Some(143));

        // start: stopped ones run again on the same workspace; a running one is refused.
        a.ok(&["start", "grace", "plain"]);
        a.screen_until("grace", "up");
        assert_eq!(info("plain")["state"], "running");
        let out = a.run(&["start", "plain", "stub"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stderr).contains("plain: it is running already"), "{}", text(&out.stderr));
        assert_eq!(info("stub")["state"], "running");

        // docker top: the sandbox's processes, as the host sees them.
        let top = a.ok(&["top", "plain"]);
        assert!(top.starts_with("PID") && top.contains("sleep 1000"), "{top}");
        // exec without `--`, flags of the command included.
        assert!(a.ok(&["exec", "plain", "ls", "-a", "/"]).contains(".."));
        // kill and rm take several too, going on past failures.
        let out = a.run(&["kill", "grace", "x--y", "plain"]);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(text(&out.stdout), "grace\nplain\n");
        let out = a.run(&["rm", "-f", "grace", "123", "stub", "plain"]);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(text(&out.stdout), "grace\nstub\nplain\n");
        assert!(a.ok(&["list"]).lines().count() <= 1);
    }
}

#[test]
fn stop_through_a_server_is_the_same_verb() {
    let a = Agents::new(As::Caller);
    let srv = Server::start(&a);
    a.ok(&["spawn", "r1", "--", "sh", "-c", GRACEFUL]);
    a.screen_until("r1", "up");
    let client = Agents::new(As::Caller);
    let out = srv.remote(&client, &["stop", "r1", "-t", "5"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "r1\n");
    let v = srv.ok("GET", "/api/v1/agents/r1", None);
    assert_eq!((v["state"].as_str(), v["exit_code"].as_i64()), (Some("exited"), Some(3)), "{v}");
    let (status, body) = srv.call("POST", "/api/v1/agents/r1/stop?grace=99999", None);
    assert_eq!(status, 400, "{body}");
    // A grace longer than the server answers within is still given in full: the answer comes
    // early (202), the kill only when the grace is over; the CLI waits for the end.
    a.ok(&["spawn", "r2", "--", "sh", "-c", STUBBORN]);
    a.screen_until("r2", "up");
    let started = std::time::Instant::now();
    let out = srv.remote(&client, &["stop", "r2", "-t", "7"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(started.elapsed() >= std::time::Duration::from_secs(7), "killed before its grace was over");
    assert_eq!(srv.ok("GET", "/api/v1/agents/r2", None)["state"], "killed");
}

/// Errors said once, naming what is wrong; one broken profile does not take the others down;
/// a swarm goes on past a taken name and says what runs.
#[test]
fn mistakes_are_named_and_do_not_stop_the_rest() {
    let a = Agents::new(As::Caller);
    let out = a.run(&["spawn", "x-", "--", "true"]);
    assert!(!out.status.success() && text(&out.stderr).contains("invalid agent name 'x-'"));
    let out = a.run(&["spawn", "p4", "--mount", "/nonexistent", "--", "true"]);
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.matches("/nonexistent").count() == 1, "{err}");
    let out = a.run(&["spawn", "nf", "--network", "full", "--", "true"]);
    assert!(out.status.success() && text(&out.stderr).contains("warning: --network full"));

    std::fs::create_dir_all(a.home.join("profiles")).unwrap();
    std::fs::write(a.home.join("profiles/broken.toml"), "bad = [\n").unwrap();
    for verb in ["profiles", "keys"] {
        let out = a.run(&[verb]);
        assert!(out.status.success(), "{verb}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("claude-code"));
        assert!(
            text(&out.stderr).contains("skipping profile broken")
                && text(&out.stderr).contains("broken.toml")
        );
    }

    a.ok(&["spawn", "s-2", "--", "sleep", "100"]);
    let out = a.run(&["swarm", "s", "3", "--", "sleep", "100"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "s-1\ns-3\n");
    assert!(text(&out.stderr).contains("running: s-1 s-3"), "{}", text(&out.stderr));
    a.ok(&["rm", "-f", "s-1", "s-2", "s-3"]);
}

/// One meaning per flag letter: `-v` a volume and `-w` the workspace in `run` and `spawn`,
/// `--tag` and `--workdir` spelled out; the old spellings still work.
#[test]
fn flag_letters_mean_one_thing() {
    let a = Agents::new(As::Caller);
    let ws = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("f.txt"), "from a volume\n").unwrap();
    std::fs::create_dir(ws.path().join("sub")).unwrap();
    let vol = format!("{}:/data:ro", data.path().display());
    let w = ws.path().to_str().unwrap();
    let out = a.run(&["run", "-w", w, "-v", &vol, "--", "cat", "/data/f.txt"]);
    assert_eq!(text(&out.stdout), "from a volume\n", "{}", text(&out.stderr));
    a.ok(&["spawn", "f1", "-w", w, "-v", &vol, "--tag", "k=v", "--", "sleep", "100"]);
    assert_eq!(a.ok(&["exec", "f1", "--workdir", "sub", "pwd"]).trim(), format!("{w}/sub"));
    // The old spellings: spawn -t for a tag, --mount for the workspace, exec -w for the workdir.
    a.ok(&["spawn", "f2", "-t", "old=yes", "--mount", w, "--", "sleep", "100"]);
    assert_eq!(a.ok(&["list", "--tag", "old=yes", "-q"]), "f2\n");
    assert_eq!(a.ok(&["exec", "f2", "-w", "sub", "pwd"]).trim(), format!("{w}/sub"));
    a.ok(&["rm", "-f", "f1", "f2"]);
}

/// `stop` between a crash and its restart (`--restart on-failure`) calls the restart off.
#[test]
fn stop_calls_off_a_pending_restart() {
    let a = Agents::new(As::Caller);
    a.ok(&["spawn", "crashy", "--restart", "on-failure:20:60", "--", "sh", "-c", "sleep 0.2; exit 1"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // Caught between a crash and its restart (the backoff doubles from 200 ms).
    loop {
        let v: serde_json::Value = serde_json::from_str(&a.ok(&["info", "crashy", "--json"])).unwrap();
        if v["agent"]["state"] == "exited" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never seen between a crash and its restart");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    a.ok(&["stop", "crashy"]);
    let starts = |a: &Agents| a.ok(&["history", "-e", "start", "-n", "100"]).matches("crashy").count();
    let before = starts(&a);
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(starts(&a), before, "restarted after a stop:\n{}", a.ok(&["history", "-n", "30"]));
    let v: serde_json::Value = serde_json::from_str(&a.ok(&["info", "crashy", "--json"])).unwrap();
    assert!(v["agent"]["state"] != "running", "{v}");
}

/// Completion asks this machine: agent names for the verbs that take them, profiles after `-p`,
/// the verbs themselves (through fish's protocol, the simplest of the three hooks).
#[test]
fn completion_knows_this_machines_agents() {
    let a = Agents::new(As::Caller);
    a.ok(&["spawn", "alpha", "--", "sleep", "100"]);
    a.ok(&["spawn", "beta", "--", "sleep", "100"]);
    let ask = |words: &[&str]| {
        let mut all = vec!["--", "agentbox"];
        all.extend_from_slice(words);
        let out = a.cmd(&all).env("AGENTBOX_COMPLETE", "fish").output().unwrap();
        assert!(out.status.success(), "{words:?}: {}", text(&out.stderr));
        text(&out.stdout).lines().map(|l| l.split('\t').next().unwrap_or("").to_string()).collect::<Vec<_>>()
    };
    let names = ask(&["kill", ""]);
    assert!(names.contains(&"alpha".to_string()) && names.contains(&"beta".to_string()), "{names:?}");
    assert_eq!(ask(&["logs", "al"]), ["alpha"]);
    assert!(ask(&["sto"]).contains(&"stop".to_string()));
    assert!(ask(&["spawn", "x", "-p", "cl"]).contains(&"claude-code".to_string()));
    // And through bash itself: the hook installed, a completion asked as bash asks it.
    let hook = a.ok(&["completion", "bash"]);
    let script = format!(
        "{hook}\nCOMP_WORDS=(agentbox attach be); COMP_CWORD=2; COMP_TYPE=9; \
         _clap_complete_agentbox agentbox be attach; echo \"got: ${{COMPREPLY[*]}}\""
    );
    let bash = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("AGENTBOX_HOME", &a.home)
        .output()
        .unwrap();
    assert_eq!(text(&bash.stdout).trim(), "got: beta", "{}", text(&bash.stderr));
    a.ok(&["rm", "-f", "alpha", "beta"]);
}

/// docker's `logs --since/--until/--timestamps`: output is dated as it is written (the
/// supervisor's time marks), here and through a server.
#[test]
fn logs_are_dated_and_can_be_cut_by_time() {
    let a = Agents::new(As::Caller);
    let srv = Server::start(&a);
    let client = Agents::new(As::Caller);
    // Two bursts, two seconds apart; a progress line redrawn with \r in the second.
    a.ok(&[
        "spawn",
        "dated",
        "--",
        "sh",
        "-c",
        "echo early; sleep 2.5; printf 'late 1%%\\rlate 99%%\\n'; echo end",
    ]);
    a.screen_until("dated", "end");
    let stamped = a.ok(&["logs", "dated", "--timestamps"]);
    let lines: Vec<(&str, &str)> = stamped.lines().map(|l| l.split_once(' ').unwrap()).collect();
    assert_eq!(lines.iter().map(|l| l.1).collect::<Vec<_>>(), ["early", "late 99%", "end"], "{stamped}");
    let secs = |t: &str| {
        humantime::parse_rfc3339(t).unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    };
    let (early, late) = (secs(lines[0].0), secs(lines[1].0));
    assert!(late - early >= 2, "{stamped}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(now.abs_diff(late) < 60, "{stamped}");
    assert_eq!(a.ok(&["logs", "dated", "-f", "--timestamps"]), stamped, "a follower dates lines the same");
    // A time between the bursts cuts the log there, as a UTC time or as Unix seconds.
    let between =
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(early + 1));
    let between = between.to_string();
    for (who, out) in [
        ("here", a.ok(&["logs", "dated", "--since", &between])),
        ("remote", text(&srv.remote(&client, &["logs", "dated", "--since", &between]).stdout)),
        ("unix", a.ok(&["logs", "dated", "--since", &(early + 1).to_string()])),
    ] {
        assert_eq!(out, "late 99%\nend\n", "{who}");
    }
    assert_eq!(a.ok(&["logs", "dated", "--until", &between]), "early\n");
    let remote = srv.remote(&client, &["logs", "dated", "--until", &between, "--timestamps"]);
    assert_eq!(text(&remote.stdout), format!("{} early\n", lines[0].0), "{}", text(&remote.stderr));
    assert_eq!(a.ok(&["logs", "dated", "--since", "1h", "-n", "1"]), "end\n");
    assert_eq!(a.ok(&["logs", "dated", "--since", "1h", "-n", "1", "--raw"]), "end\r\n");
    assert_eq!(a.ok(&["logs", "dated", "--since", "2099-01-01"]), "");
    // Mistakes are named.
    let bad = a.run(&["logs", "dated", "--since", "yesterday"]);
    assert!(text(&bad.stderr).contains("'yesterday' is not a time"), "{}", text(&bad.stderr));
    let bad = a.run(&["logs", "dated", "--raw", "--timestamps"]);
    assert!(!bad.status.success() && text(&bad.stderr).contains("--timestamps"), "{}", text(&bad.stderr));
    // The API takes the same window.
    let since_ms = (early + 1) * 1000;
    let chunk = srv.ok("GET", &format!("/api/v1/agents/dated/logs?since={since_ms}&raw=true"), None);
    assert_eq!(chunk["data"], "late 1%\rlate 99%\r\nend\r\n", "{chunk}");
    assert!(chunk["times"].as_array().is_some_and(|t| !t.is_empty()), "{chunk}");
}
