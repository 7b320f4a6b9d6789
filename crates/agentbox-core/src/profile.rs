//! Agent profiles: how to run a particular coding agent in a sandbox.
//!
//! A profile is a TOML file (built in, or `AGENTBOX_HOME/profiles/NAME.toml`). Unknown keys are
//! errors, reported with their line. Paths starting with `~/` mean the caller's home on the host;
//! inside the sandbox they appear at the same place under the agent's home (`/home/agent`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{check_secret_hosts, is_valid_env_key, validate_name, Backend, HostRule, NetworkMode, SpecError};

/// Where an agent keeps its instructions, so agentbox can add a sandbox note to them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instructions {
    /// The instructions file inside the config dir (`CLAUDE.md`, `AGENTS.md`).
    pub file: String,
    /// The agent's config directory (`~/.claude`).
    pub config_dir: String,
    /// The variable that points the agent at another config directory (`CLAUDE_CONFIG_DIR`).
    pub config_dir_env: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(skip)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The agent's command line; a command given after `--` replaces it.
    pub command: Vec<String>,
    /// Credential groups: each group is satisfied by any one of its variables, from the caller's
    /// environment or `agentbox env`. Satisfied variables are passed to the agent.
    #[serde(default)]
    pub credentials: Vec<Vec<String>>,
    #[serde(default)]
    pub network: Option<NetworkMode>,
    /// `ns` or `vm`; the caller's --backend wins.
    #[serde(default)]
    pub backend: Option<Backend>,
    /// Hosts the agent may reach in `proxy` mode, besides those its credentials are bound to.
    #[serde(default)]
    pub allow: Vec<HostRule>,
    /// The hosts each credential is sent to; the proxy swaps it in toward these hosts only.
    #[serde(default)]
    pub secret_hosts: BTreeMap<String, Vec<HostRule>>,
    /// The request headers each credential is sent in (default: where its provider reads it,
    /// else `authorization`); a placeholder anywhere else is refused by the proxy.
    #[serde(default)]
    pub secret_headers: BTreeMap<String, Vec<String>>,
    /// Host paths visible read-only.
    #[serde(default)]
    pub read_only: Vec<String>,
    /// The agent's own config: each `~/` path is copied from the host into the agent's home when
    /// it is spawned (minus `seed_skip`), and from then on is the agent's. Nothing the agent
    /// writes there reaches the host.
    #[serde(default)]
    pub read_write: Vec<String>,
    /// Paths under `read_write` not copied: credentials, files that run code or name programs to
    /// run (hooks, settings, MCP servers), and other projects' sessions. A person opts a path back
    /// in with `[profiles.NAME] seed = [...]` in config.toml.
    #[serde(default)]
    pub seed_skip: Vec<String>,
    /// Paths inside the above that the agent must not read.
    #[serde(default)]
    pub hide: Vec<String>,
    /// Files whose existence means the agent is logged in without an API key.
    #[serde(default)]
    pub auth_markers: Vec<String>,
    #[serde(default)]
    pub login_hint: String,
    /// Typed into the agent once it runs (e.g. to accept a start-up dialog).
    #[serde(default)]
    pub startup_keys: String,
    #[serde(default)]
    pub instructions: Option<Instructions>,
    /// Where `agentbox agents install` gets the agent's program.
    #[serde(default)]
    pub install: Option<Install>,
    /// Files written into the agent's home at spawn, so that it starts ready to work instead of
    /// in a menu (which key to use, whether to trust the workspace).
    #[serde(default)]
    pub files: Vec<SeedFile>,
    /// A subscription login (OAuth) the agent can use instead of a key: `agentbox login` keeps
    /// its tokens on the host, the agent gets its credentials file with placeholders.
    #[serde(default)]
    pub login: Option<LoginSpec>,
}

/// Where an agent keeps its OAuth login and whom it sends the tokens to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginSpec {
    /// The agent's credentials file (`~/.claude/.credentials.json`): where `agentbox login`
    /// finds the person's own login on the host, and where the agent gets its copy.
    pub file: String,
    /// JSON pointers (RFC 6901) into that file: the access token, the refresh token, and the
    /// expiry (milliseconds since the epoch), if it has one.
    pub access: String,
    pub refresh: String,
    #[serde(default)]
    pub expires: Option<String>,
    /// JSON pointers to other secrets in the file (a long-lived key, other services' tokens):
    /// left out of the agent's copy.
    #[serde(default)]
    pub drop: Vec<String>,
    /// The hosts the access token is sent to, in the `Authorization` header.
    pub hosts: Vec<HostRule>,
    /// The token endpoints (`https://HOST/PATH`) where the refresh token is sent, in the body.
    pub token_urls: Vec<String>,
}

impl LoginSpec {
    fn check(&self) -> Result<(), String> {
        check_path("login.file", &self.file)?;
        if !self.file.starts_with("~/") {
            return Err(format!("login.file: '{}' must start with ~/", self.file));
        }
        let pointers = [Some(&self.access), Some(&self.refresh), self.expires.as_ref()];
        for p in pointers.into_iter().flatten().chain(&self.drop) {
            if !p.starts_with('/') {
                return Err(format!("login: '{p}' is not a JSON pointer (it starts with /)"));
            }
        }
        if self.hosts.is_empty() {
            return Err("login.hosts: name the hosts the access token is sent to".into());
        }
        check_secret_hosts("login", &self.hosts).map_err(|e| format!("login.hosts: {e}"))?;
        if self.token_urls.is_empty() {
            return Err("login.token_urls: name the token endpoint".into());
        }
        for u in &self.token_urls {
            token_url_parts(u).map_err(|e| format!("login.token_urls: {e}"))?;
        }
        Ok(())
    }
}

/// The host and path of a token endpoint URL (`https://HOST/PATH`).
pub fn token_url_parts(url: &str) -> Result<(HostRule, String), String> {
    let rest = url.strip_prefix("https://").ok_or_else(|| format!("'{url}' must start with https://"))?;
    let (host, path) = rest.split_once('/').ok_or_else(|| format!("'{url}' has no path"))?;
    if host.is_empty() || host.contains(['*', ':', '@']) {
        return Err(format!("'{url}': the host must be a plain name"));
    }
    let rule: HostRule = host.parse().map_err(|e| format!("'{url}': {e}"))?;
    Ok((rule, format!("/{path}")))
}

/// A file a profile writes into its agents' homes. In `content`, `${workspace}` is the agent's
/// workspace and `${placeholder:NAME}` the placeholder the sandbox has for credential NAME.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedFile {
    /// `~/...`: under the agent's home.
    pub path: String,
    pub content: String,
    /// Written only when the agent gets this credential (a key-based setting is no use to an
    /// agent that logs in another way).
    #[serde(default)]
    pub needs: Option<String>,
}

/// An agent's program from its own registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Install {
    /// A package of the npm registry; `node` is the oldest Node.js major version it runs on.
    Npm { package: String, node: u32 },
    /// A package of PyPI, installed in a virtual environment of its own.
    Pypi { package: String },
}

/// Secrets that agents commonly use besides their provider's key, and where they may be sent.
pub const KNOWN_SECRETS: &[(&str, &[&str])] =
    &[("GITHUB_TOKEN", &["github.com", "api.github.com"]), ("GH_TOKEN", &["github.com", "api.github.com"])];

pub const BUILTIN_PROFILES: &[(&str, &str)] = &[
    ("claude-code", include_str!("profiles/claude-code.toml")),
    ("codex", include_str!("profiles/codex.toml")),
    ("gemini", include_str!("profiles/gemini.toml")),
    ("aider", include_str!("profiles/aider.toml")),
    ("opencode", include_str!("profiles/opencode.toml")),
    ("pi", include_str!("profiles/pi.toml")),
];

/// Whether `path` is `dir` or below it (component-wise, `~/` notation).
pub fn is_below(path: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    path == dir || path.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'))
}

fn check_path(field: &str, p: &str) -> Result<(), String> {
    let ok = (p.starts_with("~/") && p.len() > 2 || p.starts_with('/'))
        && !p.split('/').any(|c| c == "..")
        && p != "/";
    if ok {
        Ok(())
    } else {
        Err(format!("{field}: '{p}' must be an absolute path or start with ~/, without '..'"))
    }
}

impl Profile {
    /// Parses and validates a profile. `origin` names the file in messages.
    pub fn parse(name: &str, text: &str, origin: &str) -> Result<Self, SpecError> {
        let err = |msg: String| SpecError::Profile { origin: origin.to_string(), message: msg };
        validate_name(name).map_err(|_| err(format!("invalid profile name '{name}'")))?;
        let mut p: Profile = toml::from_str(text).map_err(|e| err(e.to_string().trim().to_string()))?;
        p.name = name.to_string();
        if p.command.first().is_none_or(|c| c.is_empty()) {
            return Err(err("command: must name a program".into()));
        }
        for group in &p.credentials {
            if group.is_empty() {
                return Err(err("credentials: a group must list at least one variable".into()));
            }
            if let Some(bad) = group.iter().find(|k| !is_valid_env_key(k)) {
                return Err(err(format!("credentials: '{bad}' is not a valid variable name")));
            }
        }
        for (key, hosts) in &p.secret_hosts {
            if !is_valid_env_key(key) {
                return Err(err(format!("secret_hosts: '{key}' is not a valid variable name")));
            }
            check_secret_hosts(key, hosts).map_err(|e| err(format!("secret_hosts: {e}")))?;
        }
        for (key, headers) in &mut p.secret_headers {
            if !p.secret_hosts.contains_key(key) {
                return Err(err(format!("secret_headers: '{key}' has no [secret_hosts] entry")));
            }
            for h in headers.iter_mut() {
                *h = crate::check_header_name(h).map_err(|e| err(format!("secret_headers: {key}: {e}")))?;
            }
        }
        for (field, list) in [
            ("read_only", &p.read_only),
            ("read_write", &p.read_write),
            ("seed_skip", &p.seed_skip),
            ("hide", &p.hide),
            ("auth_markers", &p.auth_markers),
        ] {
            for path in list {
                check_path(field, path).map_err(err)?;
            }
        }
        if let Some(abs) = p.read_write.iter().find(|x| !x.starts_with("~/")) {
            return Err(err(format!(
                "read_write: '{abs}' must start with ~/ (the agent gets its own copy in its home)"
            )));
        }
        if let Some(stray) = p.seed_skip.iter().find(|x| !p.read_write.iter().any(|rw| is_below(x, rw))) {
            return Err(err(format!("seed_skip: '{stray}' is not under any read_write path")));
        }
        if let Some(l) = &p.login {
            l.check().map_err(err)?;
        }
        if let Some(i) = &p.instructions {
            check_path("instructions.config_dir", &i.config_dir).map_err(err)?;
            if i.file.is_empty() || i.file.contains('/') {
                return Err(err("instructions.file: a file name without '/'".into()));
            }
            if !is_valid_env_key(&i.config_dir_env) {
                return Err(err("instructions.config_dir_env: not a valid variable name".into()));
            }
        }
        Ok(p)
    }

    /// The hosts a credential is bound to by the first built-in profile that names it, or by
    /// the table of other well-known secrets.
    pub fn builtin_secret_hosts(key: &str) -> Option<Vec<HostRule>> {
        BUILTIN_PROFILES
            .iter()
            .filter_map(|(n, _)| Self::builtin(n)?.ok())
            .find_map(|p| p.secret_hosts.get(key).cloned())
            .or_else(|| {
                let (_, hosts) = KNOWN_SECRETS.iter().find(|(k, _)| *k == key)?;
                hosts.iter().map(|h| h.parse().ok()).collect()
            })
    }

    pub fn builtin(name: &str) -> Option<Result<Self, SpecError>> {
        BUILTIN_PROFILES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(n, text)| Self::parse(n, text, &format!("built-in profile {n}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse() {
        for (name, _) in BUILTIN_PROFILES {
            let p = Profile::builtin(name).unwrap().unwrap();
            assert_eq!(&p.name, name);
            assert!(!p.command.is_empty());
        }
        let claude = Profile::builtin("claude-code").unwrap().unwrap();
        assert_eq!(claude.credentials, vec![vec!["ANTHROPIC_API_KEY".to_string()]]);
        assert_eq!(claude.instructions.unwrap().config_dir_env, "CLAUDE_CONFIG_DIR");
        assert!(Profile::builtin("nope").is_none());
        // Every credential a built-in profile asks for is bound to its provider's hosts.
        for (name, _) in BUILTIN_PROFILES {
            let p = Profile::builtin(name).unwrap().unwrap();
            assert_eq!(p.network, Some(NetworkMode::Proxy), "{name}");
            for key in p.credentials.iter().flatten() {
                assert!(p.secret_hosts.contains_key(key), "{name}: {key} has no hosts");
            }
        }
        let hosts = Profile::builtin_secret_hosts("ANTHROPIC_API_KEY").unwrap();
        assert_eq!(hosts, vec![HostRule::exact("api.anthropic.com")]);
        assert!(Profile::builtin_secret_hosts("NOPE").is_none());
        assert_eq!(Profile::builtin_secret_hosts("GITHUB_TOKEN").unwrap().len(), 2);
    }

    /// Mutations of real profiles (bytes dropped, duplicated, replaced) never panic the parser;
    /// whatever parses still satisfies the validation rules.
    #[test]
    fn fuzz_parse() {
        let mut rng = crate::testing::XorShift::new(0x1234_5678_9abc_def1);
        for (name, text) in BUILTIN_PROFILES {
            for _ in 0..1500 {
                let mut b = text.as_bytes().to_vec();
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(b.len());
                    match rng.below(3) {
                        0 => {
                            b.remove(i);
                        }
                        1 => b.insert(i, b[i]),
                        _ => b[i] = rng.pick(b"[]=\"~/.,\n#x"),
                    }
                }
                let Ok(t) = std::str::from_utf8(&b) else { continue };
                if let Ok(p) = Profile::parse(name, t, "fuzz") {
                    assert!(!p.command.is_empty() && !p.command[0].is_empty());
                    // No accepted path has a `..` component (a name like `.a..b` is fine).
                    assert!(p
                        .read_write
                        .iter()
                        .chain(&p.read_only)
                        .all(|x| !x.split('/').any(|c| c == "..")));
                }
            }
        }
    }

    #[test]
    fn errors_name_the_field() {
        let e = Profile::parse("x", "command = [\"a\"]\nbogus = 1\n", "x.toml").unwrap_err().to_string();
        assert!(e.contains("x.toml") && e.contains("bogus") && e.contains("line 2"), "{e}");
        let e = Profile::parse("x", "command = []", "x.toml").unwrap_err().to_string();
        assert!(e.contains("command"), "{e}");
        let e = Profile::parse("x", "command = [\"a\"]\nread_write = [\"~/../etc\"]", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("read_write"), "{e}");
        let e = Profile::parse("x", "command = [\"a\"]\nread_write = [\"/etc/x\"]", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("must start with ~/"), "{e}");
        let e = Profile::parse(
            "x",
            "command = [\"a\"]\nread_write = [\"~/.a\"]\nseed_skip = [\"~/.ab\"]",
            "x.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("seed_skip") && e.contains("~/.ab"), "{e}");
        assert!(is_below("~/.a/b", "~/.a") && is_below("~/.a", "~/.a/") && !is_below("~/.ab", "~/.a"));
        let e = Profile::parse("x", "command = [\"a\"]\ncredentials = [[\"1BAD\"]]", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("1BAD"), "{e}");
        let e =
            Profile::parse("x", "command = [\"a\"]\nnetwork = \"wifi\"", "x.toml").unwrap_err().to_string();
        assert!(e.contains("network"), "{e}");
        let e = Profile::parse("x", "command = [\"a\"]\nallow = [\"*\"]", "x.toml").unwrap_err().to_string();
        assert!(e.contains("allow") && e.contains("--network full"), "{e}");
        let e = Profile::parse("x", "command = [\"a\"]\n[secret_hosts]\nK = [\"10.0.0.1\"]", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("secret_hosts") && e.contains("address"), "{e}");
        assert!(Profile::parse("Bad", "command = [\"a\"]", "x").is_err());
    }
}
