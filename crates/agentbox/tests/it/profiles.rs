//! Profiles, stored secrets, keys and completion.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::*;

/// A fake user home and a private AGENTBOX_HOME.
struct Env {
    _dir: tempfile::TempDir,
    home: PathBuf,
    abx: PathBuf,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let (home, abx) = (root.join("user"), root.join("abx"));
        std::fs::create_dir_all(&home).unwrap();
        Self { _dir: dir, home, abx }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = command(As::Caller);
        c.env("HOME", &self.home).env("AGENTBOX_HOME", &self.abx).env_remove("ANTHROPIC_API_KEY").args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "agentbox {args:?}: {}{}", text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    }

    fn logs_after_exit(&self, name: &str) -> String {
        self.run(&["wait", name, "--timeout", "30"]);
        self.ok(&["logs", name])
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.run(&["killall"]);
    }
}

#[test]
fn stored_secrets() {
    let e = Env::new();
    e.ok(&["env", "set", "ANTHROPIC_API_KEY", "sk-one"]);
    e.ok(&["env", "set", "OTHER_TOKEN=a=b"]);
    // Without a value on the command line, the value comes from stdin (in no shell history).
    let mut child =
        e.cmd(&["env", "set", "PIPED_TOKEN"]).stdin(std::process::Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"from-stdin\n").unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(e.ok(&["env", "get", "PIPED_TOKEN"]), "from-stdin\n");
    e.ok(&["env", "unset", "PIPED_TOKEN"]);
    assert_eq!(e.ok(&["env", "get", "ANTHROPIC_API_KEY"]), "sk-one\n");
    assert_eq!(e.ok(&["env", "get", "OTHER_TOKEN"]), "a=b\n");
    assert_eq!(e.ok(&["env", "list"]), "ANTHROPIC_API_KEY\nOTHER_TOKEN\n");
    let path = PathBuf::from(e.ok(&["env", "path"]).trim());
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    e.ok(&["env", "unset", "OTHER_TOKEN"]);
    assert_eq!(e.ok(&["env", "list"]), "ANTHROPIC_API_KEY\n");
    for (args, needle) in [
        (vec!["env", "get", "NOPE"], "not set"),
        (vec!["env", "unset", "NOPE"], "not set"),
        (vec!["env", "set", "1BAD", "x"], "invalid variable name"),
        (vec!["env", "set", "K"], "no value"),
    ] {
        let out = e.run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(text(&out.stderr).contains(needle), "{args:?}: {}", text(&out.stderr));
    }
    // A secrets file others can read is refused, not used.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(text(&e.run(&["env", "list"]).stderr).contains("readable by others"));
}

#[test]
fn keys_report_what_each_profile_needs() {
    let e = Env::new();
    let report: serde_json::Value = serde_json::from_str(&e.ok(&["keys", "--json"])).unwrap();
    let claude = report.as_array().unwrap().iter().find(|r| r["profile"] == "claude-code").unwrap();
    assert_eq!(claude["ready"], false);
    e.ok(&["env", "set", "ANTHROPIC_API_KEY", "sk-x"]);
    let report: serde_json::Value = serde_json::from_str(&e.ok(&["keys", "--json"])).unwrap();
    let claude = report.as_array().unwrap().iter().find(|r| r["profile"] == "claude-code").unwrap();
    assert_eq!(claude["ready"], true);
    assert_eq!(claude["credentials"][0]["source"], "agentbox env");
    // A login on the host is not copied into agents unless the person opts it in; then it counts.
    std::fs::create_dir_all(e.home.join(".codex")).unwrap();
    std::fs::write(e.home.join(".codex/auth.json"), "{}").unwrap();
    let keys = e.ok(&["keys"]);
    assert!(keys.contains("~/.codex/auth.json is not copied into agents"), "{keys}");
    std::fs::create_dir_all(&e.abx).unwrap();
    std::fs::write(e.abx.join("config.toml"), "[profiles.codex]\nseed = [\"~/.codex/auth.json\"]\n").unwrap();
    let keys = e.ok(&["keys"]);
    assert!(keys.contains("logged in (auth file present and copied into agents)"), "{keys}");
    let names = e.ok(&["profiles"]);
    for p in ["claude-code", "codex", "gemini", "aider", "opencode", "pi"] {
        assert!(names.contains(p), "{p} missing from: {names}");
    }
}

#[test]
fn claude_profile_passes_its_key_and_overlays_instructions() {
    let e = Env::new();
    let cfg = e.home.join(".claude");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(cfg.join("CLAUDE.md"), "# house rules\n").unwrap();
    std::fs::write(cfg.join("settings.json"), "{\"k\":1}").unwrap();
    e.ok(&["env", "set", "ANTHROPIC_API_KEY", "sk-canary-profile"]);
    std::fs::write(cfg.join("keybindings.json"), "{\"kb\":1}").unwrap();
    let script = "echo key=$ANTHROPIC_API_KEY; echo dir=$CLAUDE_CONFIG_DIR; cat $CLAUDE_CONFIG_DIR/CLAUDE.md; \
                  cat ~/.claude/keybindings.json; echo; ls ~/.claude/settings.json 2>&1; echo x > ~/.claude/new; env";
    // The command after -- replaces `claude`; the profile's settings still apply.
    e.ok(&["spawn", "c", "-p", "claude-code", "--", "sh", "-c", script]);
    let logs = e.logs_after_exit("c");
    // Proxy mode by default: the agent holds a placeholder, never the key.
    assert!(logs.contains("key=agentbox-placeholder-anthropic-api-key-"), "{logs}");
    assert!(!logs.contains("sk-canary-profile"), "{logs}");
    assert!(logs.contains("dir=/home/agent/.claude"), "{logs}");
    assert!(logs.contains("# house rules") && logs.contains("## Sandbox"), "merged instructions: {logs}");
    // The agent's config is a copy of the person's: ordinary files are there, settings (hooks,
    // programs) are not, and what the agent writes stays in its own copy.
    assert!(logs.contains("{\"kb\":1}"), "{logs}");
    assert!(logs.contains("cannot access '/home/agent/.claude/settings.json'"), "{logs}");
    assert!(!cfg.join("new").exists(), "the agent wrote into the host's config dir");
    assert!(!logs.contains("OTHER"), "only declared variables pass");
    let info: serde_json::Value = serde_json::from_str(&e.ok(&["info", "c", "--json"])).unwrap();
    assert_eq!(info["agent"]["profile"], "claude-code");
    assert_eq!(info["spec"]["network"], "proxy");
    assert_eq!(info["spec"]["egress"]["secrets"][0]["hosts"][0], "api.anthropic.com");
    // With --network full there is no proxy to swap a placeholder: the agent gets the key.
    e.ok(&[
        "spawn",
        "f",
        "-p",
        "claude-code",
        "--network",
        "full",
        "--",
        "sh",
        "-c",
        "echo key=$ANTHROPIC_API_KEY",
    ]);
    assert!(e.logs_after_exit("f").contains("key=sk-canary-profile"));
    assert!(e.ok(&["info", "f"]).contains("credentials are passed to the agent as they are"));
    // The user's own instructions are untouched on the host.
    assert_eq!(std::fs::read_to_string(cfg.join("CLAUDE.md")).unwrap(), "# house rules\n");
}

#[test]
fn missing_credentials_warn_with_the_login_hint() {
    let e = Env::new();
    let out = e.run(&["spawn", "g", "-p", "gemini", "--network", "none", "--", "true"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("GEMINI_API_KEY, GOOGLE_API_KEY") && stderr.contains("agentbox login gemini"),
        "{stderr}"
    );
    let info: serde_json::Value = serde_json::from_str(&e.ok(&["info", "g", "--json"])).unwrap();
    assert_eq!(info["spec"]["network"], "none", "--network wins over the profile");
}

#[test]
fn user_profiles_and_their_errors() {
    let e = Env::new();
    let dir = e.abx.join("profiles");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("mytool.toml"),
        "description = \"mine\"\ncommand = [\"sh\", \"-c\", \"echo from-profile $MYTOOL_KEY\"]\ncredentials = [[\"MYTOOL_KEY\"]]\n[secret_hosts]\nMYTOOL_KEY = [\"api.mytool.dev\"]\n",
    )
    .unwrap();
    e.ok(&["env", "set", "MYTOOL_KEY", "v1"]);
    assert!(e.ok(&["profiles"]).contains("mytool"));
    // Profiles default to the proxy: the agent holds a placeholder, the value stays on the host.
    e.ok(&["spawn", "m", "-p", "mytool"]);
    let logs = e.logs_after_exit("m");
    assert!(logs.contains("from-profile agentbox-placeholder-mytool-key-") && !logs.contains("v1"), "{logs}");
    let info: serde_json::Value = serde_json::from_str(&e.ok(&["info", "m", "--json"])).unwrap();
    assert_eq!(info["spec"]["network"], "proxy");
    assert_eq!(info["spec"]["egress"]["secrets"][0]["hosts"][0], "api.mytool.dev");
    // A credential with nowhere to go is refused with where to say it.
    std::fs::write(dir.join("nohosts.toml"), "command = [\"true\"]\ncredentials = [[\"MYTOOL_KEY\"]]\n")
        .unwrap();
    let out = e.run(&["spawn", "n", "-p", "nohosts"]);
    assert!(text(&out.stderr).contains("[secret_hosts]"), "{}", text(&out.stderr));

    std::fs::write(dir.join("broken.toml"), "command = [\"x\"]\nnetwrok = \"full\"\n").unwrap();
    let out = e.run(&["spawn", "b", "-p", "broken"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("broken.toml") && stderr.contains("netwrok") && stderr.contains("line 2"),
        "{stderr}"
    );
    assert!(!Path::new(&e.abx.join("agents/b")).exists());
    let out = e.run(&["spawn", "n", "-p", "no-such-profile"]);
    assert!(text(&out.stderr).contains("no profile named 'no-such-profile'"));
}

#[test]
fn completion_scripts() {
    let e = Env::new();
    for shell in ["bash", "zsh", "fish"] {
        // The hook asks agentbox itself as the person types.
        let script = e.ok(&["completion", shell]);
        assert!(script.contains("AGENTBOX_COMPLETE") && script.contains("agentbox"), "{shell}: {script}");
    }
    assert_eq!(e.run(&["completion", "tcsh"]).status.code(), Some(2));
}

#[test]
fn commands_get_default_signal_actions() {
    // Rust ignores SIGPIPE; a command inside must not inherit that (`yes | head` stays quiet).
    let ws = workspace(As::Caller);
    let out = run_in(As::Caller, &ws, &[], &["sh", "-c", "yes | head -n 1; grep SigIgn /proc/self/status"]);
    assert_eq!(text(&out.stdout), "y\nSigIgn:\t0000000000000000\n");
    assert!(!text(&out.stderr).contains("Broken pipe"), "{}", text(&out.stderr));
}

/// A profile's files make the agent start ready (Gemini: the key's auth type, the workspace
/// trusted), and are written into the agent's own home only: never through a link the person's
/// seeded config holds.
#[test]
fn profile_files_are_written_into_the_agents_home_only() {
    let e = Env::new();
    let victim = e.home.join("elsewhere");
    std::fs::create_dir(&victim).unwrap();
    std::os::unix::fs::symlink(&victim, e.home.join(".gemini")).unwrap();
    let out =
        e.cmd(&["spawn", "g1", "-p", "gemini", "--", "true"]).env("GEMINI_API_KEY", "k").output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0, "a file went through the link");
    // Without the link: the files, with the workspace and nothing else.
    std::fs::remove_file(e.home.join(".gemini")).unwrap();
    let out =
        e.cmd(&["spawn", "g2", "-p", "gemini", "--", "true"]).env("GEMINI_API_KEY", "k").output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let gem = e.abx.join("agents/g2/home/.gemini");
    let trusted = std::fs::read_to_string(gem.join("trustedFolders.json")).unwrap();
    assert!(trusted.contains("agents/g2/workspace"), "{trusted}");
    assert!(std::fs::read_to_string(gem.join("settings.json")).unwrap().contains("gemini-api-key"));
    // A Codex agent is signed in with the placeholder, never the key.
    let out = e
        .cmd(&["spawn", "c1", "-p", "codex", "--", "true"])
        .env("OPENAI_API_KEY", "sk-real-key")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let auth = std::fs::read_to_string(e.abx.join("agents/c1/home/.codex/auth.json")).unwrap();
    assert!(auth.contains("agentbox-placeholder-openai-api-key") && !auth.contains("sk-real-key"), "{auth}");
}
