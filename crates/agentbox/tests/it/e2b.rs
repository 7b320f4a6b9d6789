//! E2B's own SDKs, unchanged, against a real `agentbox serve`: Python's `e2b` (tests/python) and
//! JS's `e2b` (tests/node), each scripted through what code written for E2B does.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::agents::Agents;
use crate::server::Server;
use crate::support::*;

fn python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/.venv/bin/python")
}

fn script(dir: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests").join(dir).join(name)
}

/// Runs an SDK script against `srv`; its stdout, which must end with `ok`.
fn sdk(srv: &Server, program: &Path, script: &Path, run: &str) -> String {
    let out = std::process::Command::new(program)
        .arg(script)
        .env("E2B_API_URL", &srv.url)
        .env("E2B_SANDBOX_URL", &srv.url)
        .env("E2B_API_KEY", &srv.token)
        .env("RUN", run)
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "{}:\n{stdout}\n{}",
        script.display(),
        text(&out.stderr)
    );
    stdout
}

#[test]
fn the_python_sdk_drives_sandboxes() {
    require!(python());
    for who in modes() {
        let a = Agents::new(who);
        let srv = Server::start(&a);
        let stdout = sdk(&srv, &python(), &script("python", "e2b_sdk.py"), "py");
        for step in [
            "commands.run: stdout, stderr, env, cwd",
            "a failing command raises CommandExitException",
            "background command with stdin, then killed",
            "files: write, read (text, binary, 50 MB)",
            "code interpreter",
            "pty: create, send, resize",
            "watch_dir: create, write and remove events",
            "Sandbox.list with a metadata filter",
            "pause and connect (resume): files and a running process survive",
            "fork: copies with the source's files, each its own",
            "snapshots: create, list, a sandbox from one, delete",
            "get_metrics: a sample of CPU, memory and disk",
            "set_timeout: the sandbox is gone when it expires",
        ] {
            assert!(stdout.contains(step), "as {who:?}: step {step:?} missing:\n{stdout}");
        }
        // The sandbox it kept is an agent like any other, tagged as made through E2B.
        let kept = stdout.lines().find_map(|l| l.strip_prefix("kept: ")).unwrap().to_string();
        let listed: Value =
            serde_json::from_str(&a.ok(&["list", "--json", "--tag", "created-by=e2b"])).unwrap();
        let names: Vec<&str> = listed.as_array().unwrap().iter().filter_map(|x| x["name"].as_str()).collect();
        assert_eq!(names, [kept.as_str()], "as {who:?}");
        let history = a.ok(&["history", "-e", "spawn"]);
        assert!(history.contains(&kept), "as {who:?}: {history}");
        a.ok(&["killall", "--force"]);
    }
}

#[test]
fn the_js_sdk_drives_sandboxes() {
    require!("node", node_dir("e2b"));
    for who in modes() {
        let a = Agents::new(who);
        let srv = Server::start(&a);
        let stdout = sdk(&srv, Path::new("node"), &script("node", "e2b.mjs"), "js");
        for step in [
            "commands.run, and CommandExitError",
            "files: write, read",
            "watchDir streams a create event",
            "a background command with stdin; another, killed",
            "a 50 MB file both ways",
            "fork, createSnapshot, a sandbox from it, getMetrics",
            "pty: create, send, resize",
            "pause and connect: files and a running process survive",
            "Sandbox.list with a metadata filter",
            "setTimeout: the sandbox is gone when it expires",
        ] {
            assert!(stdout.contains(step), "as {who:?}: step {step:?} missing:\n{stdout}");
        }
        a.ok(&["killall", "--force"]);
    }
}

/// Requests the SDKs would not make: each gets E2B's error shape and status, and nothing is left
/// half-made.
#[test]
fn e2b_errors_are_shaped_as_e2b_says() {
    let a = Agents::new(As::Caller);
    let srv = Server::start(&a);
    let http: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let call = |method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>| -> (u16, Value) {
        let url = format!("{}{path}", srv.url);
        let mut resp = match method {
            "GET" | "DELETE" => {
                let mut r = if method == "GET" { http.get(&url) } else { http.delete(&url) };
                for (k, v) in headers {
                    r = r.header(*k, *v);
                }
                r.call().unwrap()
            }
            _ => {
                let mut r = http.post(&url);
                for (k, v) in headers {
                    r = r.header(*k, *v);
                }
                match body {
                    Some(b) => r.content_type("application/json").send(b).unwrap(),
                    None => r.send_empty().unwrap(),
                }
            }
        };
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    };
    let key = [("x-api-key", srv.token.as_str())];
    // Control plane: the key is checked; errors are {code, message} with E2B's statuses.
    let (status, body) = call("GET", "/v2/sandboxes", &[("x-api-key", "e2b_0000")], None);
    assert_eq!((status, body["code"].as_u64()), (401, Some(401)), "{body}");
    let (status, body) = call("POST", "/v2/sandboxes", &key, Some(r#"{"templateID":"no-such-template"}"#));
    assert_eq!(status, 404, "{body}");
    assert!(body["message"].as_str().unwrap().contains("no-such-template"), "{body}");
    for bad in [
        r#"{"timeout":0}"#,
        r#"{"envVars":{"1BAD":"x"}}"#,
        "nope",
        r#"{"network":{"allowOut":["not a host!"]}}"#,
    ] {
        let (status, body) = call("POST", "/v2/sandboxes", &key, Some(bad));
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["code"] == 400 && body["message"].is_string(), "{bad}: {body}");
    }
    assert_eq!(a.ok(&["list", "--json"]).trim(), "[]", "a failed create left an agent");
    assert!(!a.home.join("e2b").exists() || std::fs::read_dir(a.home.join("e2b")).unwrap().count() == 0);
    for (method, path) in
        [("GET", "/sandboxes/e2b-nope"), ("DELETE", "/sandboxes/nope"), ("POST", "/sandboxes/x/pause")]
    {
        let (status, body) = call(method, path, &key, None);
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    let (status, _) = call("GET", "/v2/sandboxes?state=sleeping", &key, None);
    assert_eq!(status, 400);
    // envd: the sandbox's own token; an unknown sandbox is "not found" the way the SDK reads it.
    // (E2B's "deny everything, allow some" is what a sandbox here is anyway.)
    let (status, made) =
        call("POST", "/v2/sandboxes", &key, Some(r#"{"network":{"denyOut":["0.0.0.0/0"]}}"#));
    assert_eq!(status, 201, "{made}");
    let id = made["sandboxID"].as_str().unwrap();
    let token = made["envdAccessToken"].as_str().unwrap();
    let stat = r#"{"path":"/home/user"}"#;
    let (status, _) = call("POST", "/filesystem.Filesystem/Stat", &[("e2b-sandbox-id", id)], Some(stat));
    assert_eq!(status, 401);
    let (status, _) = call(
        "POST",
        "/filesystem.Filesystem/Stat",
        &[("e2b-sandbox-id", id), ("x-access-token", &srv.token)],
        Some(stat),
    );
    assert_eq!(status, 401, "the API token is not a sandbox's token");
    let envd = [("e2b-sandbox-id", id), ("x-access-token", token)];
    let (status, body) = call("POST", "/filesystem.Filesystem/Stat", &envd, Some(stat));
    assert_eq!((status, body["entry"]["type"].as_str()), (200, Some("FILE_TYPE_DIRECTORY")), "{body}");
    let (status, body) = call("POST", "/filesystem.Filesystem/Stat", &envd, Some(r#"{"path":"/nope"}"#));
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "{body}");
    let (status, body) = call(
        "POST",
        "/process.Process/SendInput",
        &envd,
        Some(r#"{"process":{"pid":1},"input":{"stdin":"eA=="}}"#),
    );
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "{body}");
    let (status, body) = call("POST", "/filesystem.Filesystem/Nope", &envd, Some("{}"));
    assert_eq!(status, 501, "{body}");
    let (status, body) = call("GET", "/files?path=/home", &envd, None);
    assert_eq!(status, 400, "{body}");
    let (status, body) = call(
        "GET",
        "/health",
        &[("e2b-sandbox-id", "e2b-0000000000000000"), ("x-access-token", token)],
        None,
    );
    assert_eq!(status, 502, "{body}");
    assert!(body["message"].as_str().unwrap().contains("was not found"), "{body}");
    let (status, _) = call("DELETE", &format!("/sandboxes/{id}"), &key, None);
    assert_eq!(status, 204);
    let (status, _) = call("GET", "/health", &envd, None);
    assert_eq!(status, 502, "a killed sandbox still answers");
}
