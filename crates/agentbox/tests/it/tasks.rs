//! Tasks end to end with scripted agents: clone, run, artifacts; timeout; cancel in every state;
//! retries; the runner (and the server) killed mid-task and taken over.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::agents::Agents;
use crate::server::Server;
use crate::server_api::read_sse;
use crate::support::*;

fn write_manifest(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    p.to_str().unwrap().to_string()
}

fn task_json(a: &Agents, id: &str) -> Value {
    let v: Value = serde_json::from_str(&a.ok(&["task", "show", id, "--json"])).unwrap();
    v
}

#[track_caller]
fn until_state(a: &Agents, id: &str, states: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = task_json(a, id);
        if states.contains(&v["task"]["state"].as_str().unwrap_or("")) {
            return v;
        }
        assert!(Instant::now() < deadline, "task {id} never reached {states:?}: {v:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn events(v: &Value) -> Vec<String> {
    v["events"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap().to_string()).collect()
}

#[test]
fn task_clones_runs_and_keeps_its_artifacts() {
    require!("git");
    let src = Repo::new();
    src.commit("README", "from the repository\n", "one");
    std::fs::create_dir_all(src.path().join("svc")).unwrap();
    src.commit("svc/app.txt", "app\n", "two");
    src.git(&["checkout", "-q", "-b", "feature"]);
    src.commit("svc/app.txt", "feature app\n", "three");
    src.git(&["checkout", "-q", "main"]);
    // Readable by the unprivileged run too.
    std::fs::set_permissions(src.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let url = src.path().to_str().unwrap();
    for who in modes() {
        let a = Agents::new(who);
        let script = "cat app.txt > ../report.txt; mkdir -p ../dist/sub; echo bin > ../dist/sub/a.bin; \
                      ln -s /etc/shadow ../leak.txt; ls /task/input > /task/output/inputs.txt; \
                      echo \"$AGENTBOX_TASK_ID\" > /task/output/id.txt; \
                      touch /task/input/x 2>/dev/null && echo INPUT-WRITABLE || echo input read-only; \
                      read -r prompt; echo \"prompt: $prompt\"";
        let manifest = format!(
            "version: \"1\"\nkind: Task\nmetadata:\n  name: smoke test\n  labels: {{team: core}}\n\
             repository:\n  url: {url}\n  branch: feature\n  subdir: svc\n\
             agent:\n  prompt: do the thing\n  command: [sh, -c, '{script}']\n\
             lifecycle: {{timeout: 1m}}\n\
             artifacts:\n  paths: [report.txt, dist/, leak.txt, missing.txt]\n"
        );
        let file = write_manifest(&a.home, "task.yaml", &manifest);
        let out = a.run(&["task", "submit", "--file", &file, "--wait"]);
        assert!(out.status.success(), "as {who:?}: {}{}", text(&out.stdout), text(&out.stderr));
        let id = text(&out.stdout).trim().to_string();
        assert!(text(&out.stderr).contains("completed"), "{}", text(&out.stderr));
        let v = task_json(&a, &id);
        let t = &v["task"];
        assert_eq!(t["state"], "completed", "{v:#}");
        assert_eq!(t["labels"]["team"], "core");
        assert!(t["reason"].as_str().unwrap().contains("not collected: leak.txt, missing.txt"), "{t}");
        assert_eq!(
            events(&v),
            [
                "task-pending",
                "task-staging",
                "task-provisioning",
                "task-running",
                "task-completing",
                "task-completed"
            ]
        );
        // The agent ran in the subdirectory of the branch's checkout, with its prompt typed in.
        let logs = a.ok(&["task", "logs", &id]);
        assert!(logs.contains("prompt: do the thing"), "{logs}");
        assert!(logs.contains("input read-only") && !logs.contains("INPUT-WRITABLE"), "{logs}");
        let listed = a.ok(&["task", "artifacts", &id, "--json"]);
        let names: Vec<String> = serde_json::from_str::<Vec<Value>>(&listed)
            .unwrap()
            .iter()
            .map(|x| x["path"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["dist/sub/a.bin", "id.txt", "inputs.txt", "report.txt"]);
        let dl = a.home.join("dl");
        a.ok(&["task", "artifacts", &id, "--download", dl.to_str().unwrap()]);
        assert_eq!(std::fs::read_to_string(dl.join("report.txt")).unwrap(), "feature app\n");
        assert_eq!(std::fs::read_to_string(dl.join("id.txt")).unwrap().trim(), id);
        assert_eq!(std::fs::read_to_string(dl.join("inputs.txt")).unwrap(), "manifest.json\nprompt.md\n");
        let listed = a.ok(&["task", "list"]);
        assert!(listed.contains(&id) && listed.contains("smoke test"), "{listed}");
    }
}

#[test]
fn bad_manifests_are_refused_with_the_path_of_the_problem() {
    let a = Agents::new(As::Caller);
    for (body, needle) in [
        ("version: '1'\nagent: {command: [sh], promt: x}\n", "agent.promt: unknown field `promt`"),
        ("version: '1'\nagent: {command: [sh]}\nlifecycle: {timeout: soon}\n", "lifecycle.timeout"),
        ("version: '9'\nagent: {command: [sh]}\n", "version"),
        ("version: '1'\nagent: {profile: no-such-profile}\n", "agent.profile"),
        ("version: '1'\nagent: {command: [sh]}\nrepository: {url: 'relative/x'}\n", "repository.url"),
        ("version: '1'\nagent: {command: [sh]}\nartifacts: {paths: [../../etc]}\n", "artifacts.paths[0]"),
    ] {
        let file = write_manifest(&a.home, "bad.yaml", body);
        let out = a.run(&["task", "submit", "-f", &file]);
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains(needle), "{body}: {}", text(&out.stderr));
    }
    let out = a.run(&["task", "submit", "-f", "/nonexistent.yaml"]);
    assert!(text(&out.stderr).contains("/nonexistent.yaml"), "{}", text(&out.stderr));
    // Nothing was half-created.
    assert_eq!(a.ok(&["task", "list", "--json"]).trim(), "[]");
    let out = a.run(&["task", "show", "ffff"]);
    assert!(text(&out.stderr).contains("no task 'ffff'"), "{}", text(&out.stderr));
}

#[test]
fn timeouts_cancels_and_retries() {
    let a = Agents::new(As::Caller);
    std::fs::write(a.home.join("config.toml"), "[tasks]\nmax_concurrent = 1\n").unwrap();
    // A timeout kills the agent and fails the task, and --wait says so.
    let file = write_manifest(
        &a.home,
        "slow.yaml",
        "version: 1\nagent: {command: [sleep, '600']}\nlifecycle: {timeout: 2s}\n",
    );
    let out = a.run(&["task", "submit", "-f", &file, "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("failed: timed out after 2s; the agent was killed"),
        "{}",
        text(&out.stderr)
    );
    let id = text(&out.stdout).trim().to_string();
    let agent = task_json(&a, &id)["task"]["agent"].as_str().unwrap().to_string();
    assert_eq!(a.state(&agent), "killed");

    // One running, one queued behind it (max_concurrent = 1): cancel both.
    let forever = write_manifest(&a.home, "forever.yaml", "version: 1\nagent: {command: [sleep, '600']}\n");
    let running = a.ok(&["task", "submit", "-f", &forever]).trim().to_string();
    until_state(&a, &running, &["running"]);
    let queued = a.ok(&["task", "submit", "-f", &forever]).trim().to_string();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(task_json(&a, &queued)["task"]["state"], "pending");
    let out = a.ok(&["task", "cancel", &queued[..6]]);
    assert!(out.contains("cancelled"), "{out}");
    let out = a.ok(&["task", "cancel", &running]);
    assert!(out.contains("cancelled"), "{out}");
    let v = task_json(&a, &running);
    assert!(
        events(&v).ends_with(&["task-cancel-requested".to_string(), "task-cancelled".to_string()]),
        "{v:#}"
    );
    assert_eq!(a.state(&format!("task-{running}")), "killed");
    let again = a.run(&["task", "cancel", &running]);
    assert!(
        !again.status.success() && text(&again.stderr).contains("already ended"),
        "{}",
        text(&again.stderr)
    );

    // Retries: the first attempt fails, the second succeeds; each attempt's log is kept.
    let flaky = write_manifest(
        &a.home,
        "flaky.yaml",
        "version: 1\nagent:\n  command: [sh, -c, 'if [ -f /task/output/tried ]; then echo second; else touch /task/output/tried; echo first; exit 3; fi']\nlifecycle: {retries: 2}\n",
    );
    let out = a.run(&["task", "submit", "-f", &flaky, "--wait"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    let v = task_json(&a, &id);
    assert_eq!(v["task"]["attempt"], 2);
    let reasons: Vec<&str> =
        v["events"].as_array().unwrap().iter().map(|e| e["detail"].as_str().unwrap()).collect();
    assert!(reasons.contains(&"the agent exited with code 3; retrying (attempt 2 of 3)"), "{reasons:?}");
    let dir = a.home.join("tasks").join(&id);
    assert!(std::fs::read_to_string(dir.join("attempt-1.log")).unwrap().contains("first"));
    assert!(std::fs::read_to_string(dir.join("attempt-2.log")).unwrap().contains("second"));
    // Out of retries: failed with the exit code.
    let bad = write_manifest(
        &a.home,
        "bad.yaml",
        "version: 1\nagent: {command: [sh, -c, 'exit 7']}\nlifecycle: {retries: 1}\n",
    );
    let out = a.run(&["task", "submit", "-f", &bad, "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("failed: the agent exited with code 7"), "{}", text(&out.stderr));
}

#[test]
fn server_and_runner_killed_mid_task_then_taken_over() {
    let a = Agents::new(As::Caller);
    let mut server = Server::start(&a);
    let manifest = serde_json::json!({
        "version": "1",
        "metadata": {"name": "waits for a file"},
        "agent": {"command": ["sh", "-c", "echo started; until [ -f /task/input/go ]; do sleep 0.1; done; echo result > /task/output/r.txt; echo finished"]},
        "lifecycle": {"timeout": "5m"},
    });
    let (status, body) =
        server.call("POST", "/api/v1/tasks", Some(&serde_json::json!({"manifest": manifest}).to_string()));
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    // A manifest with a misspelt field: 400 with where.
    let bad = serde_json::json!({"manifest": {"version": "1", "agent": {"command": ["true"]}, "lifecycle": {"timout": 5}}});
    let (status, body) = server.call("POST", "/api/v1/tasks", Some(&bad.to_string()));
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("lifecycle.timout"), "{body}");
    server.until(&format!("/api/v1/tasks/{id}"), "running", |v| v["state"] == "running");
    a.screen_until(&format!("task-{id}"), "started");
    // The machine "crashes": the server and the runner die; the agent lives on.
    server.crash();
    let pid: i32 = std::fs::read_to_string(a.home.join("tasks/runner.lock")).unwrap().trim().parse().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(task_json(&a, &id)["task"]["state"], "running");
    // A new server takes the task over; it finishes once the agent does.
    let server = Server::start(&a);
    // Someone follows the task's log (SSE) while it finishes.
    let follower = {
        let (url, token, path) =
            (server.url.clone(), server.token.clone(), format!("/api/v1/tasks/{id}/logs"));
        std::thread::spawn(move || read_sse(&Server::client_only(&url, &token), &path, |ev, _| ev == "end"))
    };
    std::fs::write(a.home.join("tasks").join(&id).join("input/go"), "").unwrap();
    let v = server.until(&format!("/api/v1/tasks/{id}"), "completed", |v| v["state"] == "completed");
    let streamed = follower.join().unwrap();
    let text: String =
        streamed.iter().filter(|(e, _)| e == "log").map(|(_, v)| v["text"].as_str().unwrap()).collect();
    assert!(text.contains("started") && text.contains("finished"), "{streamed:?}");
    let states: Vec<&str> =
        streamed.iter().filter(|(e, _)| e == "state").map(|(_, v)| v["state"].as_str().unwrap()).collect();
    assert_eq!(states.last(), Some(&"completed"), "{streamed:?}");
    assert_eq!(
        streamed.last().map(|(e, v)| (e.as_str(), v["state"].as_str())),
        Some(("end", Some("completed")))
    );
    let kinds: Vec<&str> =
        v["events"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"task-resumed"), "{kinds:?}");
    assert_eq!(v["artifacts"][0]["path"], "r.txt");
    let list = server.ok("GET", &format!("/api/v1/tasks/{id}/artifacts"), None);
    assert_eq!(list[0]["size"], 7);
    let (status, body) = server.call("GET", &format!("/api/v1/tasks/{id}/artifacts/r.txt"), None);
    assert_eq!((status, body), (200, Value::String("result\n".into())));
    let (status, _) =
        server.call("GET", &format!("/api/v1/tasks/{id}/artifacts/..%2F..%2Fmanifest.json"), None);
    assert_eq!(status, 400);
    let (status, _) = server.call("GET", &format!("/api/v1/tasks/{id}/artifacts/nope"), None);
    assert_eq!(status, 404);
    let (status, body) = server.call("GET", &format!("/api/v1/tasks/{id}/logs"), None);
    assert_eq!(status, 200);
    assert!(body.as_str().unwrap().contains("finished"), "{body}");
    let (status, _) = server.call("DELETE", &format!("/api/v1/tasks/{id}"), None);
    assert_eq!(status, 409);
    let tasks = server.ok("GET", "/api/v1/tasks", None);
    assert_eq!(tasks.as_array().unwrap().len(), 1);
}

/// `task` and `hitl` with `--server`: submitted from a machine with no agents, answered from
/// there, artifacts downloaded from there.
#[test]
fn remote_task_and_hitl() {
    let agents = Agents::new(As::Caller);
    let srv = Server::start(&agents);
    let client = Agents::new(As::Caller);
    let remote = |args: &[&str]| {
        let out = srv.remote(&client, args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let file = write_manifest(
        &client.home,
        "ask.yaml",
        "version: '1'\nagent:\n  command: [sh, -c, 'printf \"Proceed? [y/N] \"; read a; mkdir -p /task/output/d; echo \"$a\" > /task/output/d/a.txt']\n",
    );
    let id = remote(&["task", "submit", "-f", &file]).trim().to_string();
    let req = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let list: Vec<Value> = serde_json::from_str(&remote(&["hitl", "list", "--json"])).unwrap();
            if let Some(r) = list.into_iter().next() {
                break r;
            }
            assert!(Instant::now() < deadline, "no request");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert_eq!(req["agent"], format!("task-{id}"));
    remote(&["hitl", "answer", &req["id"].to_string(), "sure"]);
    let logs = remote(&["task", "logs", &id, "-f"]);
    assert!(logs.contains("Proceed? [y/N] sure"), "{logs}");
    assert!(remote(&["task", "show", &id]).contains("completed"));
    let dl = client.home.join("dl");
    remote(&["task", "artifacts", &id, "--download", dl.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(dl.join("d/a.txt")).unwrap(), "sure\n");
    assert!(remote(&["task", "list"]).contains(&id));
    // Nothing of it on the client's machine.
    assert!(!client.home.join("tasks").join(&id).exists());
}

/// A `:` in AGENTBOX_HOME, which docker's `HOST:SANDBOX` volume syntax cannot express, does not
/// break tasks: the runner hands the task's directories to the engine as typed mounts, never as
/// strings to parse again.
#[test]
fn a_colon_in_agentbox_home_does_not_break_tasks() {
    for who in modes() {
        let a = Agents::named(who, "state:home");
        let file = write_manifest(
            &a.home,
            "t.yaml",
            "version: '1'\nagent:\n  command: [sh, -c, 'cat /task/input/manifest.json > /dev/null && echo ok > /task/output/out.txt']\n",
        );
        let out = a.run(&["task", "submit", "-f", &file, "--wait"]);
        assert!(out.status.success(), "as {who:?}: {}{}", text(&out.stdout), text(&out.stderr));
        let id = text(&out.stdout).trim().to_string();
        let dl = a.home.join("dl");
        a.ok(&["task", "artifacts", &id, "--download", dl.to_str().unwrap()]);
        assert_eq!(std::fs::read_to_string(dl.join("out.txt")).unwrap(), "ok\n", "as {who:?}");
    }
}

/// A runner that is leaving never strands a task submitted at that moment, nor does a look at
/// the runner (`task show`, the dashboard) make a submit think one is there. With `linger = 0`
/// the runner leaves as soon as it is idle, so submits keep landing on one that is going.
#[test]
fn a_leaving_runner_never_strands_a_submit() {
    let a = Agents::new(As::Caller);
    std::fs::write(a.home.join("config.toml"), "[tasks]\nlinger = \"0\"\nmax_concurrent = 8\n").unwrap();
    let file = write_manifest(&a.home, "t.yaml", "version: \"1\"\nagent: {command: [\"true\"]}\n");
    let mut ids = vec![a.ok(&["task", "submit", "--file", &file]).trim().to_string()];
    // `task show` asks for the runner's pid.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let looker = {
        let (home, stop, first) = (a.home.clone(), stop.clone(), ids[0].clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ =
                    command(As::Caller).env("AGENTBOX_HOME", &home).args(["task", "show", &first]).output();
            }
        })
    };
    for i in 0..40u64 {
        ids.push(a.ok(&["task", "submit", "--file", &file]).trim().to_string());
        std::thread::sleep(Duration::from_millis(i * 37 % 60));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    looker.join().unwrap();
    for id in &ids {
        let v = until_state(&a, id, &["completed", "failed", "cancelled"]);
        assert_eq!(v["task"]["state"], "completed", "{v:#}");
    }
}
