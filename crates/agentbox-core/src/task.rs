//! Task manifests: what `agentbox task submit` and `POST /api/v1/tasks` accept.
//!
//! One document, YAML or JSON, versioned (`version: "1"`). Every section is a struct with
//! `deny_unknown_fields`, and parsing goes through `serde_path_to_error`, so a misspelt key is
//! reported with where it is (`agent.promt: unknown field ...`) instead of being ignored: a
//! timeout that silently does not apply is worse than a refused file.
//!
//! The `claude:` block of the agentic-sandbox format is accepted as an agent with the
//! `claude-code` profile, so manifests written for that tool run unchanged.

use std::collections::BTreeMap;
use std::path::{Component, Path};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Backend, HostRule, Limits, NetworkMode};

/// The manifest versions this build understands.
pub const MANIFEST_VERSIONS: &[&str] = &["1"];

/// Why a manifest was refused: where (a dotted path such as `lifecycle.timeout`, empty for the
/// whole document) and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct ManifestError {
    pub path: String,
    pub message: String,
}

fn bad(path: impl Into<String>, message: impl Into<String>) -> ManifestError {
    ManifestError { path: path.into(), message: message.into() }
}

/// The file formats a manifest can come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFormat {
    Yaml,
    Json,
}

impl ManifestFormat {
    /// By file extension: `.json` is JSON, anything else YAML (a superset of JSON anyway).
    pub fn of_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("json") => Self::Json,
            _ => Self::Yaml,
        }
    }
}

/// `version: "1"` or `version: 1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum Version {
    Text(String),
    Number(u64),
}

/// The document as written. Validated and normalised into [`TaskManifest`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    version: Option<Version>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    repository: Option<Repository>,
    #[serde(default)]
    agent: Option<AgentSection>,
    #[serde(default)]
    claude: Option<ClaudeSection>,
    #[serde(default)]
    environment: Environment,
    #[serde(default)]
    lifecycle: RawLifecycle,
    #[serde(default)]
    artifacts: Artifacts,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// A title for people; not unique.
    #[serde(default)]
    pub name: String,
    /// Accepted for compatibility and ignored: agentbox assigns task ids.
    #[serde(default, skip_serializing)]
    pub id: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repository {
    /// A URL git understands, or a host path.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// A tag or commit; with `branch`, the ref wins.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// Where in the repository the agent starts (relative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdir: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// An agent profile (claude-code, codex, ...). Without one, `command` is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Typed into the agent once it runs, and saved as `prompt.md` in the task's input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Passed as `--model` to the profile's command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Appended to the command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Replaces the profile's command (a script, a test agent, any program).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
}

/// The agentic-sandbox `claude:` block.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaudeSection {
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    args: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    /// none, proxy or full. Default: the profile's (proxy for agent profiles), else none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// ns (namespaces, the default) or vm (a QEMU microVM; limits.memory and limits.cpus size it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Hosts the egress proxy lets the agent reach.
    #[serde(default, alias = "allowed_hosts", skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: RawLimits,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Scalar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<Scalar>,
}

/// A number written as a number or as text (`cpus: 2` and `cpus: "0.5"` both work).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Int(u64),
    Text(String),
    #[serde(with = "float_text")]
    Float(String),
}

mod float_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        f64::deserialize(d).map(|f| f.to_string())
    }
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Self::Int(n) => n.to_string(),
            Self::Text(s) | Self::Float(s) => s.clone(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLifecycle {
    #[serde(default)]
    timeout: Option<Scalar>,
    #[serde(default)]
    retries: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifacts {
    /// Files or directories in the workspace, copied into the task's output when the agent ends.
    #[serde(default)]
    pub paths: Vec<String>,
}

/// A validated manifest: the one form the runner, the CLI and the API work with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskManifest {
    pub metadata: Metadata,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<Repository>,
    pub agent: AgentSection,
    pub network: Option<NetworkMode>,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub limits: Limits,
    pub backend: Backend,
    /// Seconds the agent may run; none: no limit.
    pub timeout_secs: Option<u64>,
    /// Further attempts after the agent fails (exits non-zero).
    pub retries: u32,
    pub artifacts: Vec<String>,
}

/// Retries beyond this are almost certainly a mistake (each one reruns the whole agent).
pub const MAX_RETRIES: u32 = 10;

impl TaskManifest {
    /// Parses and validates a manifest.
    pub fn parse(text: &str, format: ManifestFormat) -> Result<Self, ManifestError> {
        let raw: RawManifest = match format {
            ManifestFormat::Json => {
                let mut de = serde_json::Deserializer::from_str(text);
                serde_path_to_error::deserialize(&mut de).map_err(|e| path_error(&e))?
            }
            ManifestFormat::Yaml => {
                if text.trim().is_empty() {
                    return Err(bad("", "the manifest is empty; start with `version: \"1\"`"));
                }
                let de = serde_norway::Deserializer::from_str(text);
                serde_path_to_error::deserialize(de).map_err(|e| path_error(&e))?
            }
        };
        raw.validate()
    }

    /// The agent's display title: the metadata name, or the first line of the prompt.
    pub fn title(&self) -> String {
        if !self.metadata.name.is_empty() {
            return self.metadata.name.clone();
        }
        let first = self.agent.prompt.as_deref().and_then(|p| p.lines().next()).unwrap_or("");
        first.chars().take(60).collect()
    }
}

fn path_error<E: std::fmt::Display>(e: &serde_path_to_error::Error<E>) -> ManifestError {
    let path = e.path().to_string();
    let path = if path == "." { String::new() } else { path };
    let mut inner = e.inner().to_string();
    // The YAML parser names the enclosing path itself ("agent: unknown field ..."); said once.
    if let Some((head, rest)) = inner.split_once(": ") {
        if !path.is_empty() && !head.contains(' ') && path.starts_with(head) {
            inner = rest.to_string();
        }
    }
    // YAML errors end with their position; kept, it helps find the line.
    bad(path, inner)
}

/// The manifest document itself as JSON, unvalidated (for sending a YAML file to the API, which
/// takes the same document as JSON).
pub fn manifest_document(text: &str, format: ManifestFormat) -> Result<serde_json::Value, ManifestError> {
    match format {
        ManifestFormat::Json => serde_json::from_str(text).map_err(|e| bad("", e.to_string())),
        ManifestFormat::Yaml => serde_norway::from_str(text).map_err(|e| bad("", e.to_string())),
    }
}

/// `pause --after`'s value: a duration as [`parse_duration`] reads it, up to a year, or `off`
/// (also `0`) for never.
pub fn parse_idle(s: &str) -> Result<Option<Duration>, String> {
    if s.trim() == "off" {
        return Ok(None);
    }
    match parse_duration(s)? {
        0 => Ok(None),
        n if n > 366 * 86400 => {
            Err(format!("'{s}' is longer than a year: give a shorter idle time, or `off`"))
        }
        n => Ok(Some(Duration::from_secs(n))),
    }
}

/// Parses `90`, `90s`, `30m`, `2h`, `1h30m`, `1d` into seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let help = || {
        format!("'{s}' is not a duration: use seconds or a number with s, m, h or d (90s, 30m, 2h, 1h30m)")
    };
    let t = s.trim();
    if t.is_empty() {
        return Err(help());
    }
    if let Ok(n) = t.parse::<u64>() {
        return Ok(n);
    }
    let (mut total, mut num) = (0u64, String::new());
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(help()),
        };
        let n: u64 = num.parse().map_err(|_| help())?;
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(help)?;
        num.clear();
    }
    if !num.is_empty() {
        return Err(help());
    }
    Ok(total)
}

fn no_control(path: &str, value: &str) -> Result<(), ManifestError> {
    if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(bad(path, "control characters are not allowed here"));
    }
    Ok(())
}

/// A path inside the workspace: relative, no `..`, not empty.
pub fn check_relative(path: &str, value: &str) -> Result<(), ManifestError> {
    let p = Path::new(value);
    if value.trim().is_empty() {
        return Err(bad(path, "empty path"));
    }
    if p.is_absolute() {
        return Err(bad(path, format!("'{value}' is absolute; give a path relative to the workspace")));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(bad(path, format!("'{value}' leaves the workspace ('..' is not allowed)")));
    }
    no_control(path, value)
}

impl RawManifest {
    fn validate(self) -> Result<TaskManifest, ManifestError> {
        let version = match &self.version {
            None => return Err(bad("version", "missing; add `version: \"1\"`")),
            Some(Version::Text(v)) => v.clone(),
            Some(Version::Number(n)) => n.to_string(),
        };
        if !MANIFEST_VERSIONS.contains(&version.as_str()) {
            return Err(bad(
                "version",
                format!("version '{version}' is not supported; this agentbox reads version \"1\""),
            ));
        }
        if let Some(kind) = &self.kind {
            if kind != "Task" {
                return Err(bad("kind", format!("'{kind}' is not a task; use `kind: Task` or leave it out")));
            }
        }
        no_control("metadata.name", &self.metadata.name)?;
        if self.metadata.name.chars().count() > 200 {
            return Err(bad("metadata.name", "longer than 200 characters"));
        }
        for (k, v) in &self.metadata.labels {
            let path = format!("metadata.labels.{k}");
            if k.is_empty() || k.contains(char::is_whitespace) || k.contains(char::is_control) {
                return Err(bad(path, "a label key needs no spaces or control characters"));
            }
            no_control(&path, v)?;
        }
        let agent = match (self.agent, self.claude) {
            (Some(_), Some(_)) => {
                return Err(bad("claude", "give either `agent` or `claude` (an agent with the claude-code profile), not both"))
            }
            (Some(a), None) => a,
            (None, Some(c)) => AgentSection {
                profile: Some("claude-code".into()),
                prompt: c.prompt,
                model: c.model,
                args: c.args,
                command: Vec::new(),
            },
            (None, None) => {
                return Err(bad("agent", "missing; say what runs: `agent: {profile: claude-code, prompt: ...}` or `agent: {command: [...]}`"))
            }
        };
        if agent.profile.is_none() && agent.command.is_empty() {
            return Err(bad("agent", "give a profile (claude-code, codex, ...) or a command"));
        }
        if agent.model.is_some() && agent.profile.is_none() {
            return Err(bad(
                "agent.model",
                "needs agent.profile; a custom command takes its options in agent.command",
            ));
        }
        if let Some(p) = &agent.profile {
            crate::validate_name(p)
                .map_err(|_| bad("agent.profile", format!("'{p}' is not a profile name")))?;
        }
        for (i, a) in agent.command.iter().chain(&agent.args).enumerate() {
            if a.contains('\0') {
                return Err(bad(format!("agent.command[{i}]"), "contains a NUL byte"));
            }
        }
        if let Some(m) = &agent.model {
            no_control("agent.model", m)?;
        }
        if let Some(p) = &agent.prompt {
            if p.contains('\0') {
                return Err(bad("agent.prompt", "contains a NUL byte"));
            }
        }
        if let Some(r) = &self.repository {
            if r.url.trim().is_empty() {
                return Err(bad("repository.url", "empty; give a git URL or a host path"));
            }
            no_control("repository.url", &r.url)?;
            if r.url.starts_with('-') {
                return Err(bad("repository.url", "must not start with '-'"));
            }
            for (field, v) in [("repository.branch", &r.branch), ("repository.ref", &r.git_ref)] {
                if let Some(v) = v {
                    if v.is_empty() || v.starts_with('-') || v.chars().any(|c| c.is_control() || c == ' ') {
                        return Err(bad(field, format!("'{v}' is not a git ref")));
                    }
                }
            }
            if let Some(s) = &r.subdir {
                check_relative("repository.subdir", s)?;
            }
        }
        let env = &self.environment;
        let network = match &env.network {
            None => None,
            Some(n) => Some(n.parse::<NetworkMode>().map_err(|e| bad("environment.network", e))?),
        };
        let backend = match &env.backend {
            None => Backend::Ns,
            Some(b) => b.parse::<Backend>().map_err(|e| bad("environment.backend", e))?,
        };
        for (i, h) in env.allow.iter().enumerate() {
            h.parse::<HostRule>().map_err(|e| bad(format!("environment.allow[{i}]"), e))?;
        }
        if network == Some(NetworkMode::None) && !env.allow.is_empty() {
            return Err(bad("environment.allow", "hosts to allow need `network: proxy`, not none"));
        }
        for (k, v) in &env.env {
            if !crate::is_valid_env_key(k) {
                return Err(bad(
                    format!("environment.env.{k}"),
                    "not a variable name (letters, digits, '_')",
                ));
            }
            if v.contains('\0') {
                return Err(bad(format!("environment.env.{k}"), "contains a NUL byte"));
            }
        }
        let l = &env.limits;
        let limits = Limits {
            memory: match &l.memory {
                Some(m) => Some(
                    Limits::parse_memory(m).map_err(|e| bad("environment.limits.memory", e.to_string()))?,
                ),
                None => None,
            },
            cpus: match &l.cpus {
                Some(c) => Some(
                    Limits::parse_cpus(&c.text())
                        .map_err(|e| bad("environment.limits.cpus", e.to_string()))?,
                ),
                None => None,
            },
            pids: match &l.pids {
                Some(p) => Some(
                    Limits::parse_pids(&p.text())
                        .map_err(|e| bad("environment.limits.pids", e.to_string()))?,
                ),
                None => None,
            },
        };
        let timeout_secs = match &self.lifecycle.timeout {
            None => None,
            Some(t) => match parse_duration(&t.text()) {
                Ok(0) => {
                    return Err(bad(
                        "lifecycle.timeout",
                        "must be longer than zero; leave it out for no limit",
                    ))
                }
                Ok(n) => Some(n),
                Err(e) => return Err(bad("lifecycle.timeout", e)),
            },
        };
        let retries = self.lifecycle.retries.unwrap_or(0);
        if retries > MAX_RETRIES {
            return Err(bad("lifecycle.retries", format!("at most {MAX_RETRIES}")));
        }
        for (i, p) in self.artifacts.paths.iter().enumerate() {
            check_relative(&format!("artifacts.paths[{i}]"), p)?;
        }
        Ok(TaskManifest {
            metadata: self.metadata,
            repository: self.repository,
            agent,
            network,
            allow: env.allow.clone(),
            env: env.env.clone(),
            limits,
            backend,
            timeout_secs,
            retries,
            artifacts: self.artifacts.paths,
        })
    }
}

/// How long a timeout reads for people: `2h`, `1h30m`, `45s`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 || out.is_empty() {
        out.push_str(&format!("{sec}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Result<TaskManifest, ManifestError> {
        TaskManifest::parse(s, ManifestFormat::Yaml)
    }

    #[test]
    fn full_manifest() {
        let m = yaml(
            r#"
version: "1"
kind: Task
metadata:
  name: Refactor auth
  labels: {team: core}
repository:
  url: /srv/repo.git
  branch: main
  subdir: services/api
agent:
  profile: codex
  prompt: "do it"
  model: gpt-5
  args: ["--full-auto"]
environment:
  network: proxy
  backend: vm
  allow: [api.openai.com, "*.pypi.org"]
  env: {CI: "1"}
  limits: {memory: 2G, cpus: 1.5, pids: 256}
lifecycle: {timeout: 1h30m, retries: 2}
artifacts:
  paths: [dist, report.md]
"#,
        )
        .unwrap();
        assert_eq!(m.metadata.name, "Refactor auth");
        assert_eq!(m.agent.profile.as_deref(), Some("codex"));
        assert_eq!(m.timeout_secs, Some(5400));
        assert_eq!(m.retries, 2);
        assert_eq!(m.limits.memory, Some(2 << 30));
        assert_eq!(m.limits.cpus, Some(1.5));
        assert_eq!(m.limits.pids, Some(256));
        assert_eq!(m.network, Some(NetworkMode::Proxy));
        assert_eq!(m.backend, Backend::Vm);
        assert_eq!(m.artifacts, ["dist", "report.md"]);
    }

    #[test]
    fn claude_block_is_an_agent_with_the_claude_code_profile() {
        let text = r#"{"version": "1", "kind": "Task", "metadata": {"id": "", "name": "Refactor"},
            "repository": {"url": "https://github.com/myorg/myapp.git", "branch": "main"},
            "claude": {"prompt": "Refactor the module", "model": "claude-sonnet-4-5-20250929"},
            "lifecycle": {"timeout": "2h"}}"#;
        let m = TaskManifest::parse(text, ManifestFormat::Json).unwrap();
        assert_eq!(m.agent.profile.as_deref(), Some("claude-code"));
        assert_eq!(m.agent.model.as_deref(), Some("claude-sonnet-4-5-20250929"));
        assert_eq!(m.timeout_secs, Some(7200));
        // The same document as YAML.
        assert_eq!(yaml(text).unwrap(), m);
    }

    #[test]
    fn unknown_fields_are_reported_with_their_path() {
        let e = yaml("version: '1'\nagent:\n  command: [sh]\n  promt: hi\n").unwrap_err();
        assert_eq!(e.path, "agent.promt");
        assert!(e.message.contains("unknown field `promt`"), "{e}");
        let e = yaml("version: '1'\nagent: {command: [sh]}\nlifecycle: {timout: 5}\n").unwrap_err();
        assert_eq!(e.path, "lifecycle.timout");
        let e = TaskManifest::parse(
            r#"{"version":"1","agent":{"command":["sh"]},"environment":{"limits":{"mem":"1G"}}}"#,
            ManifestFormat::Json,
        )
        .unwrap_err();
        assert_eq!(e.path, "environment.limits.mem");
        assert!(e.to_string().starts_with("environment.limits.mem: unknown field `mem`"), "{e}");
        let e = yaml("version: '1'\nagent: {command: [sh]}\nextra: 1\n").unwrap_err();
        assert!(e.message.contains("unknown field `extra`"), "{e}");
    }

    #[test]
    fn values_are_checked_with_their_path() {
        let base = "version: '1'\nagent: {command: [sh]}\n";
        let cases = [
            ("lifecycle: {timeout: forever}", "lifecycle.timeout"),
            ("lifecycle: {timeout: 0}", "lifecycle.timeout"),
            ("lifecycle: {retries: 99}", "lifecycle.retries"),
            ("lifecycle: {retries: -1}", "lifecycle.retries"),
            ("environment: {network: wifi}", "environment.network"),
            ("environment: {allow: ['exa mple.com']}", "environment.allow[0]"),
            ("environment: {network: none, allow: [a.com]}", "environment.allow"),
            ("environment: {backend: kvm}", "environment.backend"),
            ("environment: {limits: {memory: lots}}", "environment.limits.memory"),
            ("environment: {limits: {cpus: 0}}", "environment.limits.cpus"),
            ("environment: {env: {'1A': x}}", "environment.env.1A"),
            ("artifacts: {paths: [/etc/passwd]}", "artifacts.paths[0]"),
            ("artifacts: {paths: [ok, ../../x]}", "artifacts.paths[1]"),
            ("repository: {url: ''}", "repository.url"),
            ("repository: {url: x, branch: '--upload-pack=evil'}", "repository.branch"),
            ("repository: {url: x, subdir: ../up}", "repository.subdir"),
            ("metadata: {labels: {'a b': x}}", "metadata.labels.a b"),
            ("claude: {prompt: hi}", "claude"),
        ];
        for (extra, path) in cases {
            let e = yaml(&format!("{base}{extra}\n")).unwrap_err();
            assert_eq!(e.path, path, "{extra}: {e}");
            assert!(!e.message.is_empty());
        }
        assert_eq!(yaml("agent: {command: [sh]}").unwrap_err().path, "version");
        assert_eq!(yaml("version: '2'\nagent: {command: [sh]}").unwrap_err().path, "version");
        assert_eq!(yaml("version: 1\nkind: Pod\nagent: {command: [sh]}").unwrap_err().path, "kind");
        assert_eq!(yaml("version: 1").unwrap_err().path, "agent");
        assert_eq!(yaml("version: 1\nagent: {prompt: hi}").unwrap_err().path, "agent");
        assert_eq!(yaml("version: 1\nagent: {command: [sh], model: x}").unwrap_err().path, "agent.model");
        assert!(yaml("").unwrap_err().message.contains("empty"));
        assert!(yaml("- a\n- b").is_err());
        assert!(TaskManifest::parse("{", ManifestFormat::Json).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert_eq!(parse_duration("90s").unwrap(), 90);
        assert_eq!(parse_duration("2h").unwrap(), 7200);
        assert_eq!(parse_duration("1h30m").unwrap(), 5400);
        assert_eq!(parse_duration("1d").unwrap(), 86400);
        for bad in ["", "h", "5x", "1.5h", "99999999999999999999h", "5 m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(0)), "0s");
    }

    /// Arbitrary text never panics the parser, and what parses validates.
    #[test]
    fn random_documents_do_not_panic() {
        let mut g = crate::testing::XorShift::new(0x7a5c);
        let pieces = [
            "version: '1'\n",
            "agent:\n",
            "  command: [sh]\n",
            "  profile: codex\n",
            "claude: {}\n",
            "lifecycle: {timeout: ",
            "1h}\n",
            "artifacts:\n  paths: [",
            "x]\n",
            "{",
            "}",
            "[",
            "]",
            ":",
            "- ",
            "\"",
            "'",
            "\n",
            "  ",
            "&a ",
            "*a ",
            "!!binary ",
            "environment: {limits: {cpus: ",
            "1e400}}\n",
        ];
        for _ in 0..3000 {
            let mut s = String::new();
            for _ in 0..g.below(12) {
                s.push_str(pieces[g.below(pieces.len())]);
            }
            for fmt in [ManifestFormat::Yaml, ManifestFormat::Json] {
                if let Ok(m) = TaskManifest::parse(&s, fmt) {
                    assert!(m.agent.profile.is_some() || !m.agent.command.is_empty());
                }
            }
        }
    }
}
