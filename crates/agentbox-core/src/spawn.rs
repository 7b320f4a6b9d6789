//! A request for a new agent, typed: what the CLI's flags, the API's JSON body and a task
//! manifest each build, and what the engine's spawn consumes. Values here are already parsed
//! (limits are numbers, hosts are rules, paths are paths); what needs the host to check (that a
//! directory exists, that a profile is known) is the engine's, and its errors name a [`Field`],
//! which each front end words its own way (`--from-dir`, `from_dir`, `repository.url`).

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Backend, EnvArg, HostRule, Limits, MountArg, NetworkMode};

/// Where an agent's workspace comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum WorkspaceSource {
    /// A new, empty directory in the agent's state.
    #[default]
    Empty,
    /// A copy of a host directory (links as links, no set-id bits, sparse files sparse).
    CopyOf { dir: PathBuf },
    /// A clone of a git repository (URL or host path), made in a sandbox, at `git_ref`.
    Git { url: String, git_ref: Option<String> },
    /// A host directory itself, read-write.
    HostDir { dir: PathBuf },
}

/// What the proxy may reach and which secrets it swaps (`--allow`, `--secret`, `--ask`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressRequest {
    pub allow: Vec<HostRule>,
    /// Secret names, each with the hosts given for it (none: the configured or built-in ones).
    pub secrets: Vec<(String, Option<Vec<HostRule>>)>,
    pub ask: bool,
}

impl EgressRequest {
    /// Whether anything here asks for the proxy.
    pub fn implies_proxy(&self) -> bool {
        !self.allow.is_empty() || !self.secrets.is_empty() || self.ask
    }
}

/// `--restart on-failure[:N[:WINDOW]]`: start the agent again when it exits non-zero; N failures
/// within WINDOW stop it as a crash loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    pub max_failures: u32,
    pub window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self { max_failures: 5, window: Duration::from_secs(60) }
    }
}

impl FromStr for RestartPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let help = || {
            format!("invalid restart policy '{s}': use on-failure, on-failure:N or on-failure:N:WINDOW (e.g. on-failure:5:60s)")
        };
        let mut parts = s.split(':');
        if parts.next() != Some("on-failure") {
            return Err(help());
        }
        let mut p = Self::default();
        if let Some(n) = parts.next() {
            p.max_failures = n.parse().ok().filter(|n| (1..=1000).contains(n)).ok_or_else(help)?;
        }
        if let Some(w) = parts.next() {
            let secs = crate::parse_duration(w).ok().filter(|s| *s > 0).ok_or_else(help)?;
            p.window = Duration::from_secs(secs);
        }
        if parts.next().is_some() {
            return Err(help());
        }
        Ok(p)
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "on-failure:{}:{}s", self.max_failures, self.window.as_secs())
    }
}

impl Serialize for RestartPolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RestartPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// `--publish [HOSTPORT:]PORT`: 127.0.0.1:HOSTPORT on the host forwarded to PORT on the agent's
/// own loopback, for as long as it runs (and again after each start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMap {
    pub host_port: u16,
    pub port: u16,
}

impl FromStr for PortMap {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let num = |p: &str, what: &str| match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("'{s}': {what} must be a port number from 1 to 65535 (give [HOSTPORT:]PORT)")),
        };
        match s.split_once(':') {
            Some((h, p)) => Ok(Self { host_port: num(h, "HOSTPORT")?, port: num(p, "PORT")? }),
            None => {
                let port = num(s, "PORT")?;
                Ok(Self { host_port: port, port })
            }
        }
    }
}

impl fmt::Display for PortMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host_port, self.port)
    }
}

/// A new agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpawnSpec {
    pub name: String,
    pub profile: Option<String>,
    /// Empty: the profile's command, or a shell.
    pub command: Vec<OsString>,
    /// Typed into the agent once it runs (Enter is added if it has none).
    pub prompt: Option<Vec<u8>>,
    pub tags: Vec<(String, String)>,
    pub workspace: WorkspaceSource,
    /// None: the profile's (proxy), `proxy` when `egress` asks for it, else `none`.
    pub network: Option<NetworkMode>,
    pub egress: EgressRequest,
    pub env: Vec<EnvArg>,
    pub limits: Limits,
    pub backend: Option<Backend>,
    /// A signing identity of the agent's own.
    pub identity: bool,
    /// More host paths bound inside.
    pub volumes: Vec<MountArg>,
    /// Working directory inside (relative: from the workspace).
    pub workdir: Option<PathBuf>,
    pub restart: Option<RestartPolicy>,
    /// Host ports forwarded to the agent's.
    #[serde(default)]
    pub publish: Vec<PortMap>,
}

impl SpawnSpec {
    /// The network mode it gets, given the profile's default.
    pub fn network_mode(&self, profile_default: Option<NetworkMode>) -> NetworkMode {
        let implied = self.egress.implies_proxy().then_some(NetworkMode::Proxy);
        self.network.or(implied).or(profile_default).unwrap_or_default()
    }
}

/// The part of a spawn request an error is about; each front end names it its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Name,
    Profile,
    Command,
    Prompt,
    Tags,
    FromDir,
    FromGit,
    GitRef,
    Workspace,
    Network,
    Allow,
    Secrets,
    Env,
    Memory,
    Pids,
    Cpus,
    Backend,
    Volumes,
    Workdir,
    Restart,
    Publish,
}

impl Field {
    /// The `agentbox spawn` flag.
    pub fn flag(self) -> &'static str {
        match self {
            Field::Name => "NAME",
            Field::Profile => "--profile",
            Field::Command => "CMD",
            Field::Prompt => "--prompt",
            Field::Tags => "--tag",
            Field::FromDir => "--from-dir",
            Field::FromGit => "--from-git",
            Field::GitRef => "--ref",
            Field::Workspace => "--mount",
            Field::Network => "--network",
            Field::Allow => "--allow",
            Field::Secrets => "--secret",
            Field::Env => "--env",
            Field::Memory => "--memory",
            Field::Pids => "--pids",
            Field::Cpus => "--cpus",
            Field::Backend => "--backend",
            Field::Volumes => "--volume",
            Field::Workdir => "--workdir",
            Field::Restart => "--restart",
            Field::Publish => "--publish",
        }
    }

    /// The field of the API's JSON body.
    pub fn json(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Profile => "profile",
            Field::Command => "command",
            Field::Prompt => "prompt",
            Field::Tags => "tags",
            Field::FromDir => "from_dir",
            Field::FromGit => "from_git",
            Field::GitRef => "ref",
            Field::Workspace => "workspace",
            Field::Network => "network",
            Field::Allow => "allow",
            Field::Secrets => "secrets",
            Field::Env => "env",
            Field::Memory => "memory",
            Field::Pids => "pids",
            Field::Cpus => "cpus",
            Field::Backend => "backend",
            Field::Volumes => "volumes",
            Field::Workdir => "workdir",
            Field::Restart => "restart",
            Field::Publish => "publish",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_maps() {
        assert_eq!("8080:80".parse::<PortMap>().unwrap(), PortMap { host_port: 8080, port: 80 });
        assert_eq!("3000".parse::<PortMap>().unwrap(), PortMap { host_port: 3000, port: 3000 });
        for bad in ["", "0", "x", "1:0", "70000", "1:2:3", ":80"] {
            assert!(bad.parse::<PortMap>().is_err(), "{bad}");
        }
    }

    #[test]
    fn restart_policies() {
        assert_eq!("on-failure".parse::<RestartPolicy>().unwrap(), RestartPolicy::default());
        let p: RestartPolicy = "on-failure:3:2m".parse().unwrap();
        assert_eq!((p.max_failures, p.window.as_secs()), (3, 120));
        assert_eq!(p.to_string().parse::<RestartPolicy>().unwrap(), p);
        for bad in [
            "always",
            "on-failure:0",
            "on-failure:x",
            "on-failure:3:0s",
            "on-failure:3:0",
            "on-failure:1:2:3",
            "",
        ] {
            assert!(bad.parse::<RestartPolicy>().is_err(), "{bad}");
        }
    }

    /// A spec survives its trip to the `__spawn` process (JSON) unchanged, non-UTF-8 bytes and
    /// `:` in paths included.
    #[test]
    fn round_trips_through_json() {
        use std::os::unix::ffi::OsStringExt;
        let spec = SpawnSpec {
            name: "a".into(),
            command: vec![OsString::from_vec(vec![b'x', 0xff])],
            workspace: WorkspaceSource::CopyOf { dir: "/home/u/my:proj".into() },
            volumes: vec![MountArg { source: "/a:b".into(), target: Some("/c".into()), writable: false }],
            restart: Some(RestartPolicy::default()),
            ..Default::default()
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<SpawnSpec>(&json).unwrap(), spec);
    }
}
