//! The real agents' CLIs, installed from their registries by `agentbox agents install` and run
//! with their built-in profiles. They cannot reach their providers from here: the tests check
//! what a person sees before that (the TUI renders, a prompt is submitted, the log reads as text).

use std::time::{Duration, Instant};

use crate::agents::Agents;
use crate::support::*;

#[test]
fn real_agents_install_run_and_take_a_prompt() {
    require!("node", "npm");
    let a = Agents::new(As::Caller);
    // A profile whose program is missing says how to get it.
    let out =
        a.cmd(&["spawn", "early", "-p", "codex"]).env("OPENAI_API_KEY", "sk-placeholder").output().unwrap();
    assert!(text(&out.stderr).contains("agentbox agents install codex"), "{}", text(&out.stderr));

    let started = Instant::now();
    let out = a.run(&["agents", "install", "claude-code", "codex", "gemini", "opencode", "aider"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    eprintln!("agents install took {:?}", started.elapsed());
    let listed = a.ok(&["agents", "list"]);
    for p in ["claude-code", "codex", "gemini", "opencode", "aider"] {
        let line = listed.lines().find(|l| l.starts_with(p)).unwrap();
        assert!(!line.ends_with(" -"), "{p} not installed: {listed}");
    }
    // Installing again changes nothing; removing removes.
    assert!(text(&a.run(&["agents", "install", "codex"]).stderr).contains("installed already"));

    // Each renders its TUI from the installed program, with a placeholder key; Codex and Gemini
    // start ready to work (their profiles' files choose the key and trust the workspace: no menu).
    let agents = [
        ("cc", "claude-code", "ANTHROPIC_API_KEY", "Claude Code"),
        ("cx", "codex", "OPENAI_API_KEY", "Ask Codex to do anything"),
        ("gm", "gemini", "GEMINI_API_KEY", "Authenticated with gemini-api-key"),
        ("oc", "opencode", "ANTHROPIC_API_KEY", "Ask anything"),
    ];
    for (name, profile, key, banner) in agents {
        let out =
            a.cmd(&["spawn", name, "-p", profile]).env(key, "sk-placeholder-for-tests").output().unwrap();
        assert!(out.status.success(), "{profile}: {}", text(&out.stderr));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let screen = a.ok(&["screen", name]);
            if screen.contains(banner) {
                break;
            }
            assert!(Instant::now() < deadline, "{profile} never showed {banner:?}:\n{screen}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    // A prompt sent is submitted: the agent asks its provider (through the proxy).
    for (name, provider) in
        [("oc", "api.anthropic.com"), ("cx", "api.openai.com"), ("gm", "generativelanguage.googleapis.com")]
    {
        let before = a.ok(&["net", name, "--json"]).matches(provider).count();
        a.ok(&["send", name, "say hello"]);
        let deadline = Instant::now() + Duration::from_secs(60);
        while a.ok(&["net", name, "--json"]).matches(provider).count() == before {
            assert!(
                Instant::now() < deadline,
                "{name}: the prompt was not submitted:\n{}",
                a.ok(&["screen", name])
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    // Aider (from PyPI) asks its first-run question as a HITL request; the answer goes through
    // and it comes up ready, then takes a prompt.
    let out =
        a.cmd(&["spawn", "ad", "-p", "aider"]).env("ANTHROPIC_API_KEY", "sk-placeholder").output().unwrap();
    assert!(out.status.success(), "aider: {}", text(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(90);
    let id = loop {
        let list: serde_json::Value = serde_json::from_str(&a.ok(&["hitl", "list", "--json"])).unwrap();
        let open = list.as_array().unwrap().iter().find(|r| r["agent"] == "ad").cloned();
        if let Some(r) = open {
            assert!(r["prompt"].as_str().unwrap().contains("git repo"), "{r}");
            break r["id"].to_string();
        }
        assert!(Instant::now() < deadline, "aider asked nothing:\n{}", a.ok(&["screen", "ad"]));
        std::thread::sleep(Duration::from_millis(250));
    };
    a.ok(&["hitl", "answer", &id, "y"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !a.ok(&["screen", "ad"]).contains("Git repo: .git") {
        assert!(Instant::now() < deadline, "aider did not go on:\n{}", a.ok(&["screen", "ad"]));
        std::thread::sleep(Duration::from_millis(250));
    }
    a.ok(&["send", "ad", "say hello"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !a.ok(&["net", "ad", "--json"]).contains("api.anthropic.com") {
        assert!(
            Instant::now() < deadline,
            "aider: the prompt was not submitted:\n{}",
            a.ok(&["screen", "ad"])
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // Attached to opencode (mouse tracking, alternate screen, bracketed paste, its keyboard
    // protocol) and detached: the person's terminal is left in the modes it had.
    let (mut child, mut master) = crate::agents::attach_on_pty(&a, &["attach", "oc"]);
    let mut seen = Vec::new();
    crate::agents::read_until(&mut master, &mut seen, "Build");
    std::thread::sleep(Duration::from_secs(1));
    std::io::Write::write_all(&mut master, b"\x1d").unwrap();
    assert!(child.wait().unwrap().success());
    seen.extend_from_slice(
        crate::attacks_left_behind::drain_for(&mut master, Duration::from_millis(500)).as_bytes(),
    );
    let nz = |n| std::num::NonZeroU16::new(n).unwrap();
    let mut term = vt100::Parser::new(nz(30), nz(100), 0);
    term.process(&seen);
    let s = term.screen();
    assert_eq!(s.mouse_protocol_mode(), vt100::MouseProtocolMode::None, "mouse tracking left on");
    assert!(!s.bracketed_paste() && !s.alternate_screen() && !s.hide_cursor() && !s.application_cursor());

    // Its log reads as text: what its screen showed (a full-screen TUI: its last screen), not
    // escape sequences.
    let log = a.ok(&["logs", "oc"]);
    assert!(!log.contains('\x1b') && log.lines().count() > 5, "{log}");
    assert!(log.contains("say hello") || log.contains("Build"), "{log}");
    a.ok(&["killall", "--force"]);
    a.ok(&["agents", "remove", "codex"]);
    assert!(a.ok(&["agents", "list"]).lines().any(|l| l.starts_with("codex") && l.ends_with(" -")));
}
