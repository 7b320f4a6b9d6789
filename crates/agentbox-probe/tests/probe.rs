//! The probe must report ESCAPED when an attempt succeeds; otherwise a BLOCKED from inside a
//! sandbox would prove nothing. These run outside any sandbox, with attempts harmless to the host.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn probe(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_agentbox-probe")).args(args).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[track_caller]
fn assert_escaped(args: &[&str]) {
    let (code, out) = probe(args);
    assert_eq!(code, Some(1), "{args:?}: {out}");
    assert!(out.starts_with("ESCAPED"), "{args:?}: {out}");
}

#[test]
fn detects_successful_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    assert_escaped(&["write", file.to_str().unwrap()]);
    assert_escaped(&["read", file.to_str().unwrap()]);
    assert_escaped(&["link", file.to_str().unwrap(), dir.path().join("g").to_str().unwrap()]);

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    assert_escaped(&["connect-tcp", &listener.local_addr().unwrap().to_string()]);
    let sock = dir.path().join("s");
    let _unix = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    assert_escaped(&["connect-unix", sock.to_str().unwrap()]);

    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    assert_escaped(&["kill", &child.id().to_string()]);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn reports_failures_as_blocked() {
    let (code, out) = probe(&["read", "/nonexistent/agentbox-probe"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("BLOCKED: read /nonexistent/agentbox-probe: ENOENT"), "{out}");
    let (code, _) = probe(&["no-such-attack"]);
    assert_eq!(code, Some(2));
}

#[test]
fn measuring_probes_report_figures() {
    let (_, out) = probe(&["fork-bomb", "3"]);
    assert!(out.starts_with("FORKED 3"), "{out}");
    let (code, out) = probe(&["memory-hog", "8"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("ALLOCATED 8") && out.contains("ESCAPED"), "{out}");
    let (_, out) = probe(&["loopback"]);
    assert_eq!(out, "LOOPBACK ok\n");
    let (_, out) = probe(&["busy", "0.2"]);
    assert!(out.trim().parse::<f64>().unwrap() > 0.05, "{out}");
}
