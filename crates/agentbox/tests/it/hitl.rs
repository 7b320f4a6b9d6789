//! Human in the loop end to end: a scripted agent asks, the request opens (once), people are
//! told (bell, desktop, webhook), the answer reaches the agent and it continues. Also: no request
//! for an ordinary shell, and crash loops.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::agents::Agents;
use crate::server::Server;
use crate::support::*;

/// A webhook receiver that fails its first request with 500 and accepts the rest.
fn webhook() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&got);
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            if let Ok(v) = serde_json::from_slice(&body) {
                sink.lock().unwrap().push(v);
            }
            let status = if n == 0 { "500 Internal Server Error" } else { "200 OK" };
            let _ = write!(stream, "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, got)
}

#[track_caller]
fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn open_requests(a: &Agents) -> Vec<Value> {
    serde_json::from_str::<Vec<Value>>(&a.ok(&["hitl", "list", "--json"])).unwrap()
}

#[test]
fn a_yes_no_question_is_detected_answered_and_the_agent_continues() {
    let a = Agents::new(As::Caller);
    let (url, hooks) = webhook();
    std::fs::write(
        a.home.join("config.toml"),
        format!("[hitl]\nidle_secs = 1\n\n[notify]\nwebhook = \"{url}\"\n"),
    )
    .unwrap();
    // notify-send cannot show anything on a machine without a desktop session; a stand-in on
    // PATH records how it was called.
    let bin = a.home.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let calls = a.home.join("notify-send.calls");
    std::fs::write(
        bin.join("notify-send"),
        format!("#!/bin/sh\nprintf '%s|' \"$@\" >> {}\necho >> {}\n", calls.display(), calls.display()),
    )
    .unwrap();
    std::fs::set_permissions(bin.join("notify-send"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());

    let server = Server::start(&a);
    let script = "printf 'Deploy to production? [y/N] '; read first; echo \"first=$first\"; \
                  printf 'Continue with the migration (yes/no)? '; read second; echo \"second=$second\"; sleep 600";
    let out = a.cmd(&["spawn", "asker", "--", "sh", "-c", script]).env("PATH", &path).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut ws = server.ws("asker", None, &server.viewer).unwrap();

    // The request appears, once, in the CLI and the API.
    let req = until("a request", || open_requests(&a).into_iter().next());
    assert_eq!((req["agent"].as_str(), req["kind"].as_str()), (Some("asker"), Some("yes-no")));
    assert_eq!(req["prompt"], "Deploy to production? [y/N]");
    assert!(req["score"].as_f64().unwrap() >= 0.85);
    let api = server.ok("GET", "/api/v1/hitl", None);
    assert_eq!(api.as_array().unwrap().len(), 1);
    // Attached terminals hear the bell.
    ws.read_until("\u{7}");
    // The journal (and so the SSE event stream) has it.
    let events = server.ok("GET", "/api/v1/events?event=hitl", None);
    assert_eq!(events.as_array().unwrap().len(), 1, "{events}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(open_requests(&a).len(), 1, "one request per agent, however long it waits");

    // Answered from the CLI: typed into the agent, which carries on to its next question.
    let id = req["id"].as_i64().unwrap();
    a.ok(&["hitl", "answer", &id.to_string(), "y"]);
    a.screen_until("asker", "first=y");
    let out = a.run(&["hitl", "answer", &id.to_string(), "again"]);
    assert!(!out.status.success() && text(&out.stderr).contains("answered already"), "{}", text(&out.stderr));

    // The second question, answered through the API.
    let second =
        until("a second request", || open_requests(&a).into_iter().find(|r| r["id"].as_i64() != Some(id)));
    assert_eq!(second["prompt"], "Continue with the migration (yes/no)?");
    let sid = second["id"].as_i64().unwrap();
    let (status, body) =
        server.call("POST", &format!("/api/v1/hitl/{sid}/answer"), Some(r#"{"text": "yes"}"#));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "answered");
    a.screen_until("asker", "second=yes");
    let (status, _) = server.call("POST", "/api/v1/hitl/99999/answer", Some(r#"{"text": "x"}"#));
    assert_eq!(status, 404);
    let (status, _) = server.call("POST", &format!("/api/v1/hitl/{sid}/answer"), Some(r#"{"txt": "x"}"#));
    assert_eq!(status, 400);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(open_requests(&a).is_empty(), "{:?}", open_requests(&a));
    let all = server.ok("GET", "/api/v1/hitl?all=true", None);
    let answers: Vec<&str> =
        all.as_array().unwrap().iter().map(|r| r["answer"].as_str().unwrap_or("")).collect();
    assert_eq!(answers, ["yes", "y"]);

    // The webhook got each request, the first after one retry; the desktop was told too.
    let got = until("two webhook notices", || {
        let g = hooks.lock().unwrap();
        let opened: Vec<Value> = g.iter().filter(|v| v["event"] == "hitl.opened").cloned().collect();
        (opened.len() >= 3).then_some(opened)
    });
    assert_eq!((got[0]["attempt"].as_i64(), got[1]["attempt"].as_i64()), (Some(1), Some(2)));
    assert_eq!(got[0]["hitl_id"], got[1]["hitl_id"]);
    assert_eq!(got[1]["agent"], "asker");
    assert_eq!(got[1]["prompt"], "Deploy to production? [y/N]");
    assert_eq!(got[2]["hitl_id"].as_i64(), Some(sid));
    let desk = std::fs::read_to_string(&calls).unwrap();
    assert!(
        // `--` before the agent's words: a prompt starting with `-` is not an option.
        desk.contains("--app-name=agentbox|--|asker is waiting for an answer|Deploy to production? [y/N]|"),
        "{desk}"
    );
    // The end of the agent is a notice too.
    a.ok(&["kill", "asker"]);
    until("an agent.ended notice", || {
        hooks.lock().unwrap().iter().find(|v| v["event"] == "agent.ended" && v["agent"] == "asker").cloned()
    });
}

#[test]
fn an_ordinary_shell_opens_no_request() {
    let a = Agents::new(As::Caller);
    std::fs::write(a.home.join("config.toml"), "[hitl]\nidle_secs = 0.5\n").unwrap();
    a.ok(&["spawn", "sh1", "-e", "PS1=dev@box:~/app$ ", "--", "sh", "-i"]);
    a.screen_until("sh1", "dev@box:~/app$");
    a.ok(&["send", "sh1", "echo is this a question?; ls /"]);
    a.screen_until("sh1", "usr");
    a.ok(&["send", "sh1", "printf 'Which file?'; sleep 2"]);
    a.screen_until("sh1", "Which file?");
    std::thread::sleep(Duration::from_millis(3000));
    // The idle question was detected while it waited, then closed once the prompt came back.
    let all: Vec<Value> = serde_json::from_str(&a.ok(&["hitl", "list", "--all", "--json"])).unwrap();
    assert!(all.iter().all(|r| r["state"] != "open"), "{all:?}");
    assert!(all.iter().all(|r| r["prompt"] != "dev@box:~/app$"), "{all:?}");
    let kinds: Vec<&str> = all.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert!(kinds.iter().all(|k| *k == "question"), "{kinds:?}");
}

#[test]
fn crash_loops_are_stopped_and_flagged() {
    let a = Agents::new(As::Caller);
    a.ok(&["spawn", "flaky", "--restart", "on-failure:3:60s", "--", "sh", "-c", "echo run >> runs; exit 3"]);
    until("the crash loop", || (a.state("flaky") == "crashloop").then_some(()));
    let runs = std::fs::read_to_string(a.dir("flaky").join("workspace/runs")).unwrap();
    assert_eq!(runs.lines().count(), 3);
    let history: Vec<Value> = serde_json::from_str(&a.ok(&["history", "--json", "-n", "100"])).unwrap();
    let kinds: Vec<&str> =
        history.iter().filter(|e| e["agent"] == "flaky").map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "crash").count(), 3, "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"crashloop"));
    assert!(a.ok(&["list"]).contains("crashloop"));
    // Killed is not failed: no restart.
    a.ok(&["spawn", "steady", "--restart", "on-failure", "--", "sleep", "600"]);
    a.ok(&["kill", "steady"]);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(a.state("steady"), "killed");
    let out = a.run(&["spawn", "bad", "--restart", "always", "--", "true"]);
    assert!(text(&out.stderr).contains("on-failure"), "{}", text(&out.stderr));
}

/// A request follows the person: a resize (the prompt redrawn at another width) keeps the same
/// request open; an answer to a request that went away reaches the one asking the same now; and
/// no request opens while a person attached to the agent is typing at it. It opens once they
/// leave, the prompt still there.
#[test]
fn a_request_follows_the_person() {
    let a = Agents::new(As::Caller);
    let server = Server::start(&a);
    // Asks; on a line that is not an answer it works a while (the prompt leaves the screen) and
    // asks the same again.
    let script = "while true; do printf 'Delete the old branches from the remote repository now? [y/N] '; \
                  read ans; case $ans in y) echo done-$ans; sleep 600;; *) clear; echo thinking; sleep 2;; esac; done";
    a.ok(&["spawn", "ask", "--", "sh", "-c", script]);
    let first = until("a request", || open_requests(&a).into_iter().next());
    let id = first["id"].as_i64().unwrap();
    // Narrower: the prompt wraps differently; it is the same request.
    server.ok("POST", "/api/v1/agents/ask/resize", Some(r#"{"rows":30,"cols":40}"#));
    std::thread::sleep(Duration::from_millis(1500));
    let open = open_requests(&a);
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["id"].as_i64(), Some(id), "a resize made a new request: {open:?}");
    // The agent works a while and asks again: the first request is gone, its successor asks.
    a.ok(&["send", "ask", "not-an-answer"]);
    let next = until("a successor", || open_requests(&a).into_iter().find(|r| r["id"].as_i64() != Some(id)));
    let out = a.run(&["hitl", "answer", &id.to_string(), "y"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("#{}", next["id"])), "{}", text(&out.stdout));
    a.screen_until("ask", "done-y");

    // A person at the terminal: attached and typing, the prompt opens nothing.
    a.ok(&[
        "spawn",
        "typed",
        "--",
        "sh",
        "-c",
        "read go; printf 'Overwrite the existing file? [y/N] '; read x; sleep 600",
    ]);
    let mut ws = server.ws("typed", Some("controller"), &server.token).unwrap();
    ws.type_text("go\r");
    ws.read_until("Overwrite");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        open_requests(&a).iter().all(|r| r["agent"] != "typed"),
        "a request opened while the person typed"
    );
    // They leave: the prompt is still there, and now asks.
    drop(ws);
    until("a request once the person left", || open_requests(&a).into_iter().find(|r| r["agent"] == "typed"));
}
