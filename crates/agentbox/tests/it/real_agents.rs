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
    let out = a.run(&["agents", "install", "claude-code", "codex", "gemini", "opencode"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    eprintln!("agents install took {:?}", started.elapsed());
    let listed = a.ok(&["agents", "list"]);
    for p in ["claude-code", "codex", "gemini", "opencode"] {
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
    // Its log reads as text: what its screen showed (a full-screen TUI: its last screen), not
    // escape sequences.
    let log = a.ok(&["logs", "oc"]);
    assert!(!log.contains('\x1b') && log.lines().count() > 5, "{log}");
    assert!(log.contains("say hello") || log.contains("Build"), "{log}");
    a.ok(&["killall", "--force"]);
    a.ok(&["agents", "remove", "codex"]);
    assert!(a.ok(&["agents", "list"]).lines().any(|l| l.starts_with("codex") && l.ends_with(" -")));
}
