//! `agentbox serve` over real HTTP: a real store, real agents, real supervisors.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::agents::Agents;
use crate::server::Server;
use crate::support::*;

const READ_LINES: &str = r#"["sh","-c","echo ready; while read l; do echo \"got:$l\"; done"]"#;

fn spawn_body(name: &str) -> String {
    format!(r#"{{"name":"{name}","command":{READ_LINES},"tags":{{"team":"red"}}}}"#)
}

fn names(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap().to_string()).collect()
}

#[test]
fn api_drives_agents_end_to_end() {
    for who in modes() {
        let agents = Agents::new(who);
        let srv = Server::start(&agents);

        // Spawned through the API, seen by the CLI, and the other way round.
        let (status, a) = srv.call("POST", "/api/v1/agents", Some(&spawn_body("api-one")));
        assert_eq!(status, 201, "as {who:?}: {a}");
        assert_eq!(a["state"], "running");
        assert_eq!(a["tags"]["team"], "red");
        assert!(agents.ok(&["list", "-q"]).contains("api-one"));
        agents.ok(&["spawn", "cli-one", "--", "sh", "-c", "echo from-cli; sleep 600"]);
        srv.until("/api/v1/agents", "the CLI's agent", |v| names(v).contains(&"cli-one".to_string()));

        // Sessions: screen, input, resize, logs.
        srv.screen_until("api-one", "ready");
        let (status, _) = srv.call("POST", "/api/v1/agents/api-one/input", Some(r#"{"text":"hello api"}"#));
        assert_eq!(status, 204);
        srv.screen_until("api-one", "got:hello api");
        assert_eq!(
            srv.call("POST", "/api/v1/agents/cli-one/resize", Some(r#"{"rows":33,"cols":101}"#)).0,
            204
        );
        let logs = srv.until("/api/v1/agents/api-one/logs", "the input's echo", |v| {
            v["data"].as_str().is_some_and(|d| d.contains("got:hello api"))
        });
        let size = logs["size"].as_u64().unwrap();
        let tail =
            srv.ok("GET", &format!("/api/v1/agents/api-one/logs?offset={}&limit=3&raw=true", size - 3), None);
        assert_eq!(tail["data"].as_str().unwrap().len(), 3, "{tail}");
        assert_eq!(tail["next_offset"], size);

        // Filters and tags.
        let red = srv.ok("GET", "/api/v1/agents?tag=team=red", None);
        assert_eq!(names(&red), ["api-one"]);
        let tagged = srv.ok("PUT", "/api/v1/agents/cli-one/tags", Some(r#"{"team":"blue","tier":"1"}"#));
        assert_eq!(tagged["tags"], json!({"team": "blue", "tier": "1"}));
        assert!(agents.ok(&["list", "--tag", "team=blue", "-q"]).contains("cli-one"));

        // Lifecycle: kill, restart, rm (refused while running, then forced).
        let killed = srv.ok("POST", "/api/v1/agents/api-one/kill", None);
        assert_eq!(killed["state"], "killed");
        assert_eq!(srv.ok("GET", "/api/v1/agents?status=exited", None).as_array().unwrap().len(), 1);
        let (status, e) = srv.call("POST", "/api/v1/agents/api-one/input", Some(r#"{"text":"x"}"#));
        assert_eq!(status, 409, "{e}");
        let restarted = srv.ok("POST", "/api/v1/agents/api-one/restart", None);
        assert_eq!(restarted["state"], "running");
        srv.screen_until("api-one", "ready");
        let (status, e) = srv.call("DELETE", "/api/v1/agents/api-one", None);
        assert_eq!(status, 409, "{e}");
        assert!(e["error"].as_str().unwrap().contains("running"), "{e}");
        assert_eq!(srv.call("DELETE", "/api/v1/agents/api-one?force=true", None).0, 204);
        assert_eq!(srv.call("GET", "/api/v1/agents/api-one", None).0, 404);
        assert!(!agents.dir("api-one").exists());

        // The journal, as JSON.
        let events = srv.ok("GET", "/api/v1/events?limit=1000", None);
        let kinds: Vec<&str> =
            events.as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
        for k in ["spawn", "start", "killed", "restart", "rm", "tags"] {
            assert!(kinds.contains(&k), "as {who:?}: no {k} in {kinds:?}");
        }
        let detail = srv.ok("GET", "/api/v1/agents/cli-one", None);
        assert_eq!(detail["spec"]["hostname"], "cli-one");
        srv.ok("POST", "/api/v1/agents/cli-one/kill", None);
    }
}

#[test]
fn api_requires_a_token_and_the_viewer_token_only_reads() {
    let agents = Agents::new(As::Caller);
    let srv = Server::start(&agents);
    assert_eq!(srv.call_as(None, "GET", "/healthz", None).0, 200);
    for path in ["/api/v1/agents", "/readyz", "/metrics", "/api/v1/openapi.json", "/api/v1/events", "/"] {
        let (status, body) = srv.call_as(None, "GET", path, None);
        assert_eq!(status, 401, "{path} without a token: {body}");
        assert_eq!(srv.call_as(Some("wrong"), "GET", path, None).0, 401, "{path} with a wrong token");
        assert_eq!(srv.call_as(Some(&srv.viewer), "GET", path, None).0, 200, "{path} with the viewer token");
    }
    let (status, body) = srv.call_as(None, "POST", "/api/v1/agents", Some(&spawn_body("x")));
    assert_eq!(status, 401, "{body}");
    let (status, body) = srv.call_as(Some(&srv.viewer), "POST", "/api/v1/agents", Some(&spawn_body("x")));
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("only read"), "{body}");
    assert!(agents.ok(&["list", "-q"]).trim().is_empty(), "a refused request spawned something");

    // The token files are the owner's alone.
    use std::os::unix::fs::PermissionsExt;
    for f in ["api-token", "api-token-viewer"] {
        let mode = std::fs::metadata(agents.home.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }

    // A token in a cookie counts for nothing (browsers send cookies to every port of a host).
    let http: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let resp = http
        .post(&format!("{}/api/v1/agents/nope/kill", srv.url))
        .header("Cookie", &format!("agentbox_token={}", srv.token))
        .send_empty()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    // A page opened by URL without a credential is the shell: no data in it.
    let mut resp = http.get(&format!("{}/", srv.url)).header("Accept", "text/html").call().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let shell = resp.body_mut().read_to_string().unwrap();
    assert!(shell.contains("data-shell") && !shell.contains("agents"), "{shell}");
}

#[test]
fn api_rejects_bad_input_with_clear_4xx() {
    let agents = Agents::new(As::Caller);
    let srv = Server::start(&agents);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, "x").unwrap();
    let not_dir = format!(r#"{{"name":"w","workspace":"{}"}}"#, file.display());
    let tags: serde_json::Map<String, Value> = (0..100_000).map(|i| (format!("t{i}"), json!("v"))).collect();
    let many_tags = json!({"name": "a", "tags": tags}).to_string();
    let many_tags_put = Value::Object(tags).to_string();
    let long_tag = json!({"name": "a", "tags": {"k": "v".repeat(5000)}}).to_string();
    let cases: Vec<(&str, &str, Option<String>, u16, &str)> = vec![
        ("POST", "/api/v1/agents", Some("{".into()), 400, "invalid request body"),
        ("POST", "/api/v1/agents", Some("[]".into()), 400, "invalid request body"),
        ("POST", "/api/v1/agents", Some(r#"{"name":"a","bogus":1}"#.into()), 400, "unknown field `bogus`"),
        ("POST", "/api/v1/agents", Some(r#"{"command":["x"]}"#.into()), 400, "missing field `name`"),
        ("POST", "/api/v1/agents", Some(r#"{"name":"Bad_Name"}"#.into()), 400, "invalid agent name"),
        ("POST", "/api/v1/agents", Some(r#"{"name":"a","network":"wide"}"#.into()), 400, "wide"),
        ("POST", "/api/v1/agents", Some(r#"{"name":"a","memory":"lots"}"#.into()), 400, "invalid size"),
        ("POST", "/api/v1/agents", Some(r#"{"name":"a","pids":0}"#.into()), 400, "--pids"),
        ("POST", "/api/v1/agents", Some(r#"{"name":"a","cpus":-1}"#.into()), 400, "--cpus"),
        (
            "POST",
            "/api/v1/agents",
            Some(r#"{"name":"a","profile":"no-such"}"#.into()),
            400,
            "no profile named",
        ),
        ("POST", "/api/v1/agents", Some(r#"{"name":"a","allow":["not a host"]}"#.into()), 400, "not a host"),
        ("POST", "/api/v1/agents", Some(r#"{"name":"a","env":["HOME"]}"#.into()), 400, "KEY=VALUE"),
        ("POST", "/api/v1/agents", Some(r#"{"name":"a","workspace":"relative"}"#.into()), 400, "absolute"),
        ("POST", "/api/v1/agents", Some(not_dir), 400, "not a directory"),
        ("POST", "/api/v1/agents", Some(r#"{"name":"a","ref":"main"}"#.into()), 400, "ref needs from_git"),
        // Paths the server would have taken from its own directory, or that are not there.
        (
            "POST",
            "/api/v1/agents",
            Some(r#"{"name":"a","volumes":["x"]}"#.into()),
            400,
            "volumes: -v x: a volume needs a path in the sandbox",
        ),
        (
            "POST",
            "/api/v1/agents",
            Some(r#"{"name":"a","volumes":["x/y:/d"]}"#.into()),
            400,
            "volumes: x/y is not an absolute path",
        ),
        (
            "POST",
            "/api/v1/agents",
            Some(r#"{"name":"a","volumes":["/nonexistent"]}"#.into()),
            400,
            "does not exist",
        ),
        (
            "POST",
            "/api/v1/agents",
            Some(r#"{"name":"a","workdir":"/nonexistent/dir"}"#.into()),
            400,
            "workdir: /nonexistent/dir is not a directory",
        ),
        ("POST", "/api/v1/agents", Some(many_tags), 400, "tags: 100000 tags: at most 64"),
        ("POST", "/api/v1/agents", Some(long_tag), 400, "at most 1024"),
        ("PUT", "/api/v1/agents/x/tags", Some(many_tags_put), 400, "at most 64"),
        (
            "POST",
            "/api/v1/agents",
            Some(r#"{"name":"a","from_git":"nowhere"}"#.into()),
            400,
            "from_git: \"nowhere\" is not a repository",
        ),
        (
            "POST",
            "/api/v1/agents",
            Some(r#"{"name":"a","from_git":"/no/such/repo"}"#.into()),
            400,
            "/no/such/repo",
        ),
        (
            "POST",
            "/api/v1/agents",
            Some(r#"{"name":"a","command":["/no/such/program"]}"#.into()),
            400,
            "command not found",
        ),
        (
            "POST",
            "/api/v1/agents",
            Some(r#"{"name":"a","tags":{"k":"\u001b[31m"}}"#.into()),
            400,
            "invalid tag",
        ),
        ("GET", "/api/v1/agents?status=sleeping", None, 400, "invalid status"),
        ("GET", "/api/v1/agents?tag=novalue", None, 400, "KEY=VALUE"),
        ("GET", "/api/v1/agents/ghost", None, 404, "no agent named 'ghost'"),
        ("DELETE", "/api/v1/agents/ghost", None, 404, "ghost"),
        ("POST", "/api/v1/agents/ghost/kill", None, 404, "ghost"),
        ("POST", "/api/v1/agents/ghost/restart", None, 404, "ghost"),
        ("GET", "/api/v1/agents/ghost/screen", None, 404, "ghost"),
        ("GET", "/api/v1/agents/ghost/logs", None, 404, "ghost"),
        ("GET", "/api/v1/agents/ghost/net", None, 404, "ghost"),
        ("POST", "/api/v1/agents/ghost/input", Some(r#"{"text":"x"}"#.into()), 404, "ghost"),
        ("POST", "/api/v1/agents/ghost/resize", Some(r#"{"rows":1,"cols":1}"#.into()), 404, "ghost"),
        ("POST", "/api/v1/agents/ghost/allow", Some(r#"{"host":"example.com"}"#.into()), 404, "ghost"),
        ("PUT", "/api/v1/agents/ghost/tags", Some(r#"{"a":"b"}"#.into()), 404, "ghost"),
        ("GET", "/api/v1/agents/UPPER", None, 400, "invalid agent name"),
        ("POST", "/api/v1/agents/x/input", Some(r#"{"text":1}"#.into()), 400, "invalid type"),
        ("POST", "/api/v1/agents/x/resize", Some(r#"{"rows":-1,"cols":2}"#.into()), 400, "invalid value"),
        ("POST", "/api/v1/agents/x/allow", Some(r#"{"host":"a b"}"#.into()), 400, "a b"),
        ("PUT", "/api/v1/agents/x/tags", Some(r#"{"":"b"}"#.into()), 400, "invalid tag"),
        ("GET", "/api/v1/events?limit=many", None, 400, "invalid query"),
        ("GET", "/api/v1/nothing-here", None, 404, "no such endpoint"),
    ];
    for (method, path, body, want, needle) in cases {
        let (status, v) = srv.call(method, path, body.as_deref());
        assert_eq!(status, want, "{method} {path} {body:?}: {v}");
        let msg = v["error"].as_str().unwrap_or_else(|| panic!("{method} {path}: no error message in {v}"));
        assert!(msg.contains(needle), "{method} {path} {body:?}: {msg:?} does not say {needle:?}");
    }
    assert!(
        srv.ok("GET", "/api/v1/agents", None).as_array().unwrap().is_empty(),
        "a refused spawn left an agent"
    );
    assert!(!agents.home.join("agents/a").exists(), "a refused spawn left its directory");
    // A body that is not JSON at all.
    let http: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let resp = http
        .post(&format!("{}/api/v1/agents", srv.url))
        .header("Authorization", &format!("Bearer {}", srv.token))
        .content_type("text/plain")
        .send("name=a")
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);

    // A name taken is a conflict, and nothing is half-created by any of the above.
    srv.ok("POST", "/api/v1/agents", Some(&spawn_body("taken")));
    let (status, v) = srv.call("POST", "/api/v1/agents", Some(&spawn_body("taken")));
    assert_eq!(status, 409, "{v}");
    assert_eq!(agents.ok(&["list", "-q"]).trim(), "taken");
    let dirs: Vec<_> =
        std::fs::read_dir(agents.home.join("agents")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(dirs, ["taken"]);
}

#[test]
fn websocket_viewers_and_a_controller() {
    let agents = Agents::new(As::Caller);
    let srv = Server::start(&agents);
    srv.ok("POST", "/api/v1/agents", Some(&spawn_body("term")));
    srv.screen_until("term", "ready");

    // Screen replay on connect, then live output to every viewer.
    let mut viewers: Vec<_> = (0..3).map(|_| srv.ws("term", None, &srv.viewer).unwrap()).collect();
    for v in &mut viewers {
        v.read_until("ready");
    }
    let mut ctl = srv.ws("term", Some("controller"), &srv.token).unwrap();
    ctl.read_until("ready");
    // An observer's keys go nowhere.
    viewers[0].type_text("from-observer\r");
    ctl.type_text("from-controller\r");
    for v in viewers.iter_mut().chain(std::iter::once(&mut ctl)) {
        v.read_until("got:from-controller");
    }
    let screen = srv.screen_until("term", "got:from-controller");
    assert!(!screen.contains("got:from-observer"), "an observer typed into the agent:\n{screen}");

    // The viewer token cannot take control; an unknown role is refused.
    match srv.ws("term", Some("controller"), &srv.viewer) {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 403),
        other => panic!("viewer token got control: {:?}", other.map(|_| ())),
    }
    match srv.ws("term", Some("boss"), &srv.token) {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 400),
        other => panic!("unknown role accepted: {:?}", other.map(|_| ())),
    }
    match srv.ws("term", None, "wrong") {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 401),
        other => panic!("wrong token accepted: {:?}", other.map(|_| ())),
    }

    // Resizing from the controller reaches the terminal.
    ctl.socket.send(tungstenite::Message::Text(r#"{"type":"resize","rows":31,"cols":97}"#.into())).unwrap();
    srv.ok(
        "POST",
        "/api/v1/agents",
        Some(r#"{"name":"sizer","command":["sh","-c","sleep 0.5; stty size; sleep 600"]}"#),
    );
    let mut s = srv.ws("sizer", Some("controller"), &srv.token).unwrap();
    s.socket.send(tungstenite::Message::Text(r#"{"type":"resize","rows":31,"cols":97}"#.into())).unwrap();
    s.read_until("31 97");

    // The end of the agent reaches every viewer as an exit message.
    ctl.type_text("\x04");
    let exit = ctl.next_text().expect("an exit message");
    assert_eq!(serde_json::from_str::<Value>(&exit).unwrap(), json!({"type": "exit", "code": 0}));
    assert_eq!(viewers[1].next_text().as_deref(), Some(exit.as_str()));
    srv.ok("POST", "/api/v1/agents/sizer/kill", None);
}

/// Reads SSE events from a stream until `stop` returns true for one; returns (event, data) pairs.
pub(crate) fn read_sse(
    srv: &Server,
    path: &str,
    stop: impl Fn(&str, &Value) -> bool,
) -> Vec<(String, Value)> {
    use std::io::BufRead;
    let http: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(30))).build().into();
    let resp = http
        .get(&format!("{}{path}", srv.url))
        .header("Authorization", &format!("Bearer {}", srv.token))
        .header("Accept", "text/event-stream")
        .call()
        .unwrap();
    assert_eq!(resp.headers().get("content-type").unwrap(), "text/event-stream");
    let reader = std::io::BufReader::new(resp.into_body().into_reader());
    let (mut event, mut out) = (String::new(), Vec::new());
    for line in reader.lines() {
        let line = line.unwrap();
        if let Some(e) = line.strip_prefix("event: ") {
            event = e.to_string();
        } else if let Some(d) = line.strip_prefix("data: ") {
            let v: Value = serde_json::from_str(d).unwrap_or(Value::String(d.into()));
            let done = stop(&event, &v);
            out.push((event.clone(), v));
            if done {
                break;
            }
        }
    }
    out
}

#[test]
fn sse_streams_events_and_follows_logs() {
    let agents = Agents::new(As::Caller);
    let srv = Server::start(&agents);
    let watcher = {
        let (url, token) = (srv.url.clone(), srv.token.clone());
        std::thread::spawn(move || {
            let me = Server::client_only(&url, &token);
            read_sse(&me, "/api/v1/events", |ev, v| ev == "exit" && v["agent"] == "sse-a")
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    agents.ok(&["spawn", "sse-a", "--", "sh", "-c", "for i in 1 2 3; do echo line-$i; sleep 0.3; done"]);
    let events = watcher.join().unwrap();
    let kinds: Vec<&str> =
        events.iter().filter(|(_, v)| v["agent"] == "sse-a").map(|(e, _)| e.as_str()).collect();
    assert_eq!(kinds, ["spawn", "start", "exit"], "{events:?}");

    agents.ok(&["spawn", "sse-b", "--", "sh", "-c", "for i in 1 2 3 4 5; do echo out-$i; sleep 0.3; done"]);
    let chunks = read_sse(&srv, "/api/v1/agents/sse-b/logs?offset=0", |ev, _| ev == "end");
    let text: String =
        chunks.iter().filter(|(e, _)| e == "log").map(|(_, v)| v["data"].as_str().unwrap()).collect();
    assert_eq!(text.matches("out-").count(), 5, "{chunks:?}");
    assert!(
        chunks.iter().filter(|(e, _)| e == "log").count() >= 2,
        "not streamed but read at once: {chunks:?}"
    );
    assert_eq!(chunks.last().unwrap().0, "end");
}

#[test]
fn metrics_count_agents_spawns_exits_and_latency() {
    let agents = Agents::new(As::Caller);
    let srv = Server::start(&agents);
    srv.ok("POST", "/api/v1/agents", Some(&spawn_body("m1")));
    srv.ok("POST", "/api/v1/agents", Some(&spawn_body("m2")));
    srv.ok("POST", "/api/v1/agents/m2/kill", None);
    srv.ok("GET", "/api/v1/agents", None);
    let (status, text) = srv.call("GET", "/metrics", None);
    assert_eq!(status, 200);
    let text = text.as_str().unwrap().to_string();
    for line in [
        "agentbox_agents{state=\"running\"} 1",
        "agentbox_agents{state=\"killed\"} 1",
        "agentbox_spawns_total 2",
        "agentbox_exits_total{state=\"killed\"} 1",
        "agentbox_api_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/agents\",status=\"200\"} 1",
        "agentbox_api_request_duration_seconds_count{method=\"POST\",route=\"/api/v1/agents\",status=\"201\"} 2",
    ] {
        assert!(text.contains(line), "no {line:?} in\n{text}");
    }
    assert!(text.contains("agentbox_output_bytes "), "{text}");
}

#[test]
fn a_killed_server_loses_no_agent_and_attach_works_again() {
    let agents = Agents::new(As::Caller);
    let mut srv = Server::start(&agents);
    for n in ["keep-1", "keep-2"] {
        srv.ok("POST", "/api/v1/agents", Some(&spawn_body(n)));
    }
    srv.screen_until("keep-1", "ready");
    let mut ws = srv.ws("keep-1", Some("controller"), &srv.token).unwrap();
    ws.read_until("ready");
    srv.crash();
    // The agents do not notice.
    for n in ["keep-1", "keep-2"] {
        assert_eq!(agents.state(n), "running", "{n} after the server died");
    }
    agents.ok(&["send", "keep-1", "while-down"]);
    agents.screen_until("keep-1", "got:while-down");

    let srv = Server::start(&agents);
    let list = srv.ok("GET", "/api/v1/agents", None);
    let states: Vec<(&str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap(), a["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("keep-1", "running"), ("keep-2", "running")]);
    let mut ws = srv.ws("keep-1", Some("controller"), &srv.token).unwrap();
    ws.read_until("got:while-down");
    ws.type_text("after-restart\r");
    ws.read_until("got:after-restart");
}

#[test]
fn serve_refuses_a_network_address_without_tls() {
    require!("curl");
    let agents = Agents::new(As::Caller);
    let out = agents.run(&["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("--tls-cert") && err.contains("--insecure-plain-http-on-network"), "{err}");
    assert!(!agents.home.join("api-token").exists() || err.contains("reachable"));
    let out = agents.run(&["serve", "--listen", "127.0.0.1:0", "--tls-cert", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    // With an explicit opt-out it serves, and says so.
    let srv = Server::start_with(&agents, &["--insecure-plain-http-on-network"]);
    assert_eq!(srv.call("GET", "/readyz", None).0, 200);
    drop(srv);

    // With a certificate it speaks TLS.
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
    let mut child = agents
        .cmd(&[
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--tls-cert",
            c.to_str().unwrap(),
            "--tls-key",
            k.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line)
        .unwrap();
    let _guard = KillOnDrop(child);
    let port = line.trim().rsplit(':').next().unwrap().to_string();
    let token = std::fs::read_to_string(agents.home.join("api-token")).unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--cacert", c.to_str().unwrap(), "--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(["-H", &format!("Authorization: Bearer {}", token.trim())])
        .arg(format!("https://localhost:{port}/readyz"))
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "ready\n", "{}", text(&out.stderr));
}

/// Runs a Playwright script of tests/node in Debian's chromium; its output once it said "ok".
#[track_caller]
fn browser(script: &str, args: &[&str]) -> String {
    browser_with(script, args, &[], String::new)
}

/// As `browser`; a failure also prints what `why` tells about the server's side.
#[track_caller]
fn browser_or(script: &str, args: &[&str], why: impl FnOnce() -> String) -> String {
    browser_with(script, args, &[], why)
}

/// As `browser_or`, with more variables in the script's environment.
#[track_caller]
fn browser_with(
    script: &str,
    args: &[&str],
    envs: &[(&str, &std::ffi::OsStr)],
    why: impl FnOnce() -> String,
) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/node").join(script);
    let modules = script.parent().unwrap().join("node_modules/playwright-core");
    assert!(modules.is_dir(), "playwright-core is missing: run `npm ci --prefix tests/node`");
    let chromium = chromium();
    let out = std::process::Command::new("node")
        .arg(&script)
        .args(args)
        .env("CHROMIUM", &chromium)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    if !(out.status.success() && stdout.trim_end().ends_with("ok")) {
        panic!("{stdout}\n{}\n{}", text(&out.stderr), why());
    }
    stdout
}

/// The dashboard in a real browser: Debian's chromium driven by Playwright (tests/node).
#[test]
fn dashboard_in_headless_chromium() {
    require!("node", chromium(), node_dir("playwright-core"));
    let agents = Agents::new(As::Caller);
    let srv = Server::start(&agents);
    agents.ok(&[
        "spawn",
        "asker",
        "--",
        "sh",
        "-c",
        "printf '\\033[1;31mShip it?\\033[0m [y/N] '; read a; echo got-$a; sleep 600",
    ]);
    for b in ["bulk-1", "bulk-2"] {
        agents.ok(&["spawn", b, "--", "sleep", "1000"]);
    }
    // An agent on an overlay of a project (owned by the sandbox's host id, so it can be one).
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("a.txt"), "one\n").unwrap();
    let id = agent_host_id(As::Caller);
    for p in [project.path().to_path_buf(), project.path().join("a.txt")] {
        std::os::unix::fs::chown(&p, Some(id), Some(id)).unwrap();
    }
    let from = project.path().to_str().unwrap();
    agents.ok(&["spawn", "ws", "--from-dir", from, "--", "sh", "-c", "echo two > a.txt; sleep 1000"]);
    agents.ok(&[
        "spawn",
        "webapp",
        "--",
        "sh",
        "-c",
        "echo '<h1>made by the agent</h1>' > index.html; exec python3 -u -m http.server 3000 --bind 127.0.0.1",
    ]);
    agents.screen_until("webapp", "Serving HTTP");
    let shots = tempfile::tempdir().unwrap();
    let stdout = browser_with(
        "dashboard.mjs",
        &[&srv.url, &srv.token, "from-browser", "asker"],
        &[
            ("SHOTS", shots.path().as_os_str()),
            ("BULK", "bulk-1 bulk-2".as_ref()),
            ("WORKSPACE", "ws".as_ref()),
            ("WEBAPP", "webapp".as_ref()),
        ],
        String::new,
    );
    assert_eq!(std::fs::read_to_string(project.path().join("a.txt")).unwrap(), "two\n");
    assert_eq!(srv.ok("GET", "/api/v1/agents/ws-fork", None)["state"], "running");
    for step in [
        "created from-browser",
        "typed into the terminal",
        "sent text with the form",
        "grid thumbnail shows the screen, in colour",
        "opening the page left the agent's size alone",
        "bulk stop and remove on ticked agents",
        "the workspace panel lists the changes and a new checkpoint",
        "apply from the panel wrote the changes",
        "forked from the checkpoint's row",
        "the ports panel lists the port the agent listens on",
        "Open showed the app on its own origin, without the dashboard's session",
        "paused from the bulk bar and resumed from the row",
        "the prompt from the form was typed in",
        "listed as running, with its tag",
        "search and the state filter narrow the list",
        "listed as killed",
        "offers Restart and Remove only",
        "shown waiting for you, and counted",
        "fits desktop and phone widths",
        "answered with the Yes button",
        "removed from the list",
        "a missing agent is an HTML page",
    ] {
        assert!(stdout.contains(step), "step {step:?} missing:\n{stdout}");
    }
    // What the browser did happened to real agents: the one it made is gone, the question was
    // answered with `y`, and a screenshot of each page was taken at both widths.
    for gone in ["from-browser", "bulk-1", "bulk-2"] {
        let (status, _) = srv.call("GET", &format!("/api/v1/agents/{gone}"), None);
        assert_eq!(status, 404, "{gone}");
    }
    agents.screen_until("asker", "got-y");
    let taken = std::fs::read_dir(shots.path()).unwrap().count();
    assert_eq!(taken, 10, "screenshots: {taken}");
}

/// A server on another port of the same host: it answers every request and logs its headers,
/// one JSON object per line.
struct Eavesdropper {
    child: KillOnDrop,
    log: tempfile::NamedTempFile,
    url: String,
}

impl Eavesdropper {
    fn start() -> Self {
        let log = tempfile::NamedTempFile::new().unwrap();
        let code = r#"
import http.server, json, sys
log = open(sys.argv[1], "a")
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        log.write(json.dumps({"path": self.path, "headers": dict(self.headers)}) + "\n"); log.flush()
        self.send_response(200); self.send_header("content-type", "text/html"); self.end_headers()
        self.wfile.write(b"<html><body>a dev server</body></html>")
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;
        let mut child = std::process::Command::new("python3")
            .args(["-c", code])
            .arg(log.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line)
            .unwrap();
        let url = format!("http://127.0.0.1:{}", line.trim());
        Self { child: KillOnDrop(child), log, url }
    }

    fn heard(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap()
    }
}

/// Threat model, "the dashboard session" row: signed in on one port, the browser then visits a
/// server on another port of the same host (a dev server an agent started). It hears no
/// credential: no cookie is ever set, the session lives in the dashboard origin's own storage,
/// and no token travels in a URL.
#[test]
fn the_dashboard_session_stays_with_its_server_in_headless_chromium() {
    require!("node", chromium(), node_dir("playwright-core"));
    let agents = Agents::new(As::Caller);
    let srv = Server::start(&agents);
    let other = Eavesdropper::start();
    let stdout = browser("session.mjs", &[&srv.url, &srv.token, &other.url]);
    for step in
        ["signed in", "pages load by URL and on reload", "no cookie was set", "visited the other port"]
    {
        assert!(stdout.contains(step), "step {step:?} missing:\n{stdout}");
    }
    let heard = other.heard();
    assert!(heard.contains("/page") && heard.contains("/fetched"), "{heard}");
    assert!(!heard.contains(&srv.token), "the other server got the token: {heard}");
    assert!(!heard.contains("abs1.") && !heard.to_ascii_lowercase().contains("\"cookie\""), "{heard}");
    drop(other.child);
    // And a token in a URL is refused rather than used.
    let http: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let resp = http.get(&format!("{}/login?token={}", srv.url, srv.token)).call().unwrap();
    assert_eq!(resp.status().as_u16(), 400);
}

/// Schemathesis (tests/python) generates requests from the OpenAPI document, including stateful
/// sequences that spawn agents and use them: no 5xx, every status and body as documented.
#[test]
fn api_fuzzed_by_schemathesis() {
    require!(schemathesis());
    let st = schemathesis();
    assert!(st.exists(), "schemathesis is missing: see tests/python/README.md (CI installs it)");
    let agents = Agents::new(As::Caller);
    let srv = Server::start(&agents);
    let seed = std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261122".into());
    let out = std::process::Command::new(&st)
        .args(["run", &format!("{}/api/v1/openapi.json", srv.url)])
        .args(["-H", &format!("Authorization: Bearer {}", srv.token)])
        // The E2B control plane's operations authenticate by this header instead.
        .args(["-H", &format!("X-API-KEY: {}", srv.token)])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", "40", "--request-timeout", "30", "--seed", &seed, "--no-color"])
        .current_dir(&agents.home)
        .output()
        .unwrap();
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "schemathesis found failures:\n{report}");
    // Every operation of the document (the count in "Selected: N/N"), so a new one is covered too.
    let selected = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("Selected: ")?.split('/').nth(1).map(str::to_string))
        .unwrap_or_default();
    assert!(selected.parse::<u32>().is_ok_and(|n| n >= 51), "operations: {selected}\n{report}");
    assert!(report.contains(&format!("Tested: {selected}")), "not every operation was tested:\n{report}");
}

/// `agentbox --server URL` (and saved contexts) drives a server with the usual verbs, from a
/// machine that has no agents of its own.
#[test]
fn remote_cli_drives_a_server() {
    let agents = Agents::new(As::Caller);
    let srv = Server::start(&agents);
    let client = Agents::new(As::Caller);
    let remote = |args: &[&str]| {
        let out = srv.remote(&client, args);
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let (code, out, err) = remote(&[
        "spawn",
        "far",
        "--tag",
        "where=remote",
        "--memory",
        "256M",
        "--",
        "sh",
        "-c",
        READ_LINES_SH,
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "far");
    // It exists on the server, not on the client.
    assert!(agents.ok(&["list", "-q"]).contains("far"));
    assert!(client.ok(&["list", "-q"]).trim().is_empty());
    let (_, out, _) = remote(&["list", "--tag", "where=remote"]);
    assert!(out.contains("far") && out.contains("running"), "{out}");
    srv.screen_until("far", "ready");
    assert_eq!(remote(&["send", "far", "over", "http"]).0, Some(0));
    srv.screen_until("far", "got:over http");
    let (_, out, _) = remote(&["screen", "far"]);
    assert!(out.contains("got:over http"), "{out}");
    let (_, out, _) = remote(&["logs", "far", "-n", "1"]);
    assert_eq!(out.trim(), "got:over http");
    let (_, out, _) = remote(&["info", "far"]);
    assert!(out.contains("\"memory\": 268435456"), "{out}");

    // Attach over the WebSocket: typed keys reach the agent, Ctrl-] detaches.
    let mut child = client
        .cmd(&["--server", &srv.url, "attach", "far"])
        .env("AGENTBOX_TOKEN", &srv.token)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    use std::io::Write;
    stdin.write_all(b"via-attach\r").unwrap();
    srv.screen_until("far", "got:via-attach");
    stdin.write_all(b"\x1d").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("[detached from far]"), "{}", text(&out.stdout));

    // Errors come back as the server says them.
    let (code, _, err) = remote(&["kill", "ghost"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no agent named 'ghost'") && err.contains("404"), "{err}");
    let (code, _, err) = remote(&["diff", "far"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("not available with --server"), "{err}");

    // A saved context instead of --server; the token from a file.
    let token_file = client.home.join("far-token");
    std::fs::write(&token_file, &srv.token).unwrap();
    client.ok(&["context", "add", "lab", &srv.url, "--token-file", token_file.to_str().unwrap()]);
    client.ok(&["context", "use", "lab"]);
    assert!(client.ok(&["context", "list"]).contains("* lab"));
    assert_eq!(client.ok(&["kill", "far"]).trim(), "far");
    assert_eq!(agents.state("far"), "killed");
    assert_eq!(client.ok(&["rm", "far"]).trim(), "far");
    assert!(!agents.ok(&["list", "-q"]).contains("far"));
    client.ok(&["context", "use", "none"]);
    assert!(client.ok(&["list", "-q"]).trim().is_empty());
    let out = client.run(&["context", "add", "bad", "ftp://x"]);
    assert!(text(&out.stderr).contains("invalid server URL"), "{}", text(&out.stderr));
}

const READ_LINES_SH: &str = r#"echo ready; while read l; do echo "got:$l"; done"#;

/// Tasks and the HITL queue in a real browser (tests/node/tasks.mjs).
#[test]
fn task_pages_and_hitl_queue_in_headless_chromium() {
    require!("node", chromium(), node_dir("playwright-core"));
    let agents = Agents::new(As::Caller);
    let srv = Server::start(&agents);
    let stdout = browser_or("tasks.mjs", &[&srv.url, &srv.token], || {
        let tasks = srv.call("GET", "/api/v1/tasks", None).1;
        let log = std::fs::read_to_string(agents.home.join("tasks/runner.log")).unwrap_or_default();
        format!("tasks: {tasks}\nrunner.log:\n{log}")
    });
    for step in [
        "refused with the field's path",
        "in the queue",
        "answered from the queue",
        "the artifact holds the answer",
        "cancelled from the task page",
    ] {
        assert!(stdout.contains(step), "step {step:?} missing:\n{stdout}");
    }
    // What the browser did happened to real tasks.
    let tasks = srv.ok("GET", "/api/v1/tasks", None);
    let states: Vec<&str> = tasks.as_array().unwrap().iter().map(|t| t["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["completed", "cancelled"]);
    let all = srv.ok("GET", "/api/v1/hitl?all=true", None);
    let answered: Vec<&Value> = all.as_array().unwrap().iter().filter(|r| r["state"] == "answered").collect();
    assert_eq!(answered.len(), 1, "{all:#}");
    assert_eq!(answered[0]["answer"], "y", "{all:#}");
}

/// A change made by the CLI is in the API's answers at once, not after the list's next refresh.
#[test]
fn a_change_from_the_cli_shows_in_the_api_at_once() {
    let agents = Agents::new(As::Caller);
    let srv = Server::start(&agents);
    let state = |name: &str| {
        let list = srv.ok("GET", "/api/v1/agents", None);
        list.as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .map(|a| a["state"].as_str().unwrap().to_string())
    };
    assert_eq!(state("none"), None);
    for i in 0..5 {
        let name = format!("now-{i}");
        agents.ok(&["spawn", &name, "--", "sleep", "100"]);
        assert_eq!(state(&name).as_deref(), Some("running"), "spawned by the CLI");
        agents.ok(&["kill", &name]);
        assert_eq!(state(&name).as_deref(), Some("killed"), "killed by the CLI");
        agents.ok(&["rm", &name]);
        assert_eq!(state(&name), None, "removed by the CLI");
    }
}

/// The verbs render the same values the same way here and with --server: `list`, `hitl list`,
/// `history` and `task list` print identically on the server's machine and on a client.
#[test]
fn remote_and_local_print_the_same() {
    let agents = Agents::new(As::Caller);
    let srv = Server::start(&agents);
    let client = Agents::new(As::Caller);
    agents.ok(&[
        "spawn",
        "same",
        "--tag",
        "team=a",
        "--",
        "sh",
        "-c",
        "printf 'Proceed? [y/N] '; read a; sleep 100",
    ]);
    agents.ok(&["spawn", "other", "--", "true"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while agents.ok(&["hitl", "list", "--json"]).trim() == "[]" {
        assert!(Instant::now() < deadline, "no HITL request");
        std::thread::sleep(Duration::from_millis(100));
    }
    agents.ok(&["wait", "other"]);
    let views: [&[&str]; 8] = [
        &["list"],
        &["list", "--json"],
        &["list", "--tag", "team=a"],
        &["hitl", "list"],
        &["hitl", "list", "--all", "--json"],
        &["history", "-n", "20"],
        &["task", "list"],
        &["screen", "same"],
    ];
    for args in views {
        // Ages are printed in seconds: a second may pass between the two.
        let mut last = (String::new(), String::new());
        let same = (0..5).any(|_| {
            let out = srv.remote(&client, args);
            assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
            last = (agents.ok(args), text(&out.stdout));
            last.0 == last.1
        });
        assert!(same, "{args:?} differs:\nhere:\n{}\nremote:\n{}", last.0, last.1);
        assert!(!last.0.trim().is_empty() || args[0] == "task", "{args:?} printed nothing");
    }
}

/// A viewer that stops reading while the agent floods is dropped by the supervisor; it is told
/// why, with the log offset where what it missed begins, and the log has every byte from there.
#[test]
fn a_viewer_that_falls_behind_is_told_where_to_resume() {
    let agents = Agents::new(As::Caller);
    let srv = Server::start(&agents);
    let body = json!({"name": "fast", "command": ["sh", "-c", "echo ready; read go; head -c 60000000 /dev/zero | tr '\\0' y | fold -w 100; echo flood-end; exec sleep 1000"]}).to_string();
    srv.ok("POST", "/api/v1/agents", Some(&body));
    srv.screen_until("fast", "ready");
    let mut slow = srv.ws("fast", None, &srv.viewer).unwrap();
    slow.read_until("ready");
    srv.ok("POST", "/api/v1/agents/fast/input", Some(r#"{"text":"go"}"#));
    // Not reading while 60 MB go by.
    let started = Instant::now();
    while !srv.ok("GET", "/api/v1/agents/fast/screen", None)["screen"].as_str().unwrap().contains("flood-end")
    {
        assert!(started.elapsed() < Duration::from_secs(120), "the flood never ended");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut got = 0usize;
    let close = loop {
        match slow.socket.read() {
            Ok(tungstenite::Message::Close(f)) => break f.expect("a close frame with a reason"),
            Ok(m) => got += m.len(),
            Err(e) => panic!("the viewer was dropped without a reason after {got} bytes: {e}"),
        }
    };
    assert_eq!(u16::from(close.code), 4000, "{close:?}");
    let reason = close.reason.to_string();
    let offset: u64 = reason.rsplit(' ').next().unwrap().parse().unwrap_or_else(|_| panic!("{reason}"));
    let size = std::fs::metadata(agents.dir("fast").join("log")).unwrap().len();
    assert!(offset < size, "{reason}: the log has {size} bytes");
    let rest = srv.ok("GET", &format!("/api/v1/agents/fast/logs?offset={offset}&limit=100"), None);
    assert_eq!(rest["offset"], offset, "{rest}");
}
