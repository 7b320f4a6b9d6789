//! The API's body for a new agent, and its translation into the engine's [`SpawnSpec`]. Every
//! field means what the `agentbox spawn` flag of the same name means and goes through the same
//! parsers; an error names the field as this body spells it.

use std::collections::BTreeMap;

use agentbox_core::{
    parse_env_arg, parse_mount_arg, parse_secret_arg, Backend, EgressRequest, EnvArg, Field, HostRule,
    Limits, NetworkMode, RestartPolicy, SpawnSpec, WorkspaceSource,
};
use agentbox_engine::Error;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A new agent, as the API and the dashboard's form give it. Every field means what the
/// `agentbox spawn` flag of the same name means, and goes through the same parsers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpawnRequest {
    /// Lowercase letters, digits and '-', at most 63 characters.
    #[schema(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")]
    pub name: String,
    /// claude-code, codex, gemini, aider, opencode, pi or a profile of your own.
    #[serde(default)]
    pub profile: Option<String>,
    /// The command; empty: the profile's, or a shell.
    #[serde(default)]
    pub command: Vec<String>,
    /// Text typed into the agent once it runs (Enter is added).
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// A host directory used as the workspace itself, read-write.
    #[serde(default)]
    pub workspace: Option<String>,
    /// Start from a copy of this host directory.
    #[serde(default)]
    pub from_dir: Option<String>,
    /// Start from a clone of this git repository (URL or host path).
    #[serde(default)]
    pub from_git: Option<String>,
    /// With from_git: the branch, tag or commit.
    #[serde(default, rename = "ref")]
    pub git_ref: Option<String>,
    /// none, proxy or full.
    #[serde(default)]
    pub network: Option<String>,
    /// Hosts the proxy may reach: host, *.domain or an IP address.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Secrets kept on the host: NAME or NAME=HOST,HOST.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Hold requests to other hosts until allowed.
    #[serde(default)]
    pub ask: bool,
    /// KEY=VALUE pairs.
    #[serde(default)]
    pub env: Vec<String>,
    /// Memory limit such as 512M or 2G.
    #[serde(default)]
    pub memory: Option<String>,
    /// Maximum number of processes.
    #[serde(default)]
    pub pids: Option<u64>,
    /// CPU bandwidth in cores, such as 0.5 (with backend vm: virtual CPUs, rounded up).
    #[serde(default)]
    pub cpus: Option<f64>,
    /// ns (namespaces, the default) or vm (a QEMU microVM; memory and cpus size the guest).
    #[serde(default)]
    #[schema(pattern = r"^(ns|vm)$")]
    pub backend: Option<String>,
    /// Give the agent its own signing identity.
    #[serde(default)]
    pub identity: bool,
    /// More host paths bound inside: HOST[:SANDBOX][:ro|rw].
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Working directory inside (relative: from the workspace).
    #[serde(default)]
    pub workdir: Option<String>,
    /// on-failure[:N[:WINDOW]]: start it again when it exits non-zero.
    #[serde(default)]
    pub restart: Option<String>,
    /// Host ports forwarded to the agent's own loopback while it runs: `[HOSTPORT:]PORT`.
    #[serde(default)]
    pub publish: Vec<String>,
}

fn bad(field: Field) -> impl Fn(String) -> Error {
    move |message| Error::invalid(message).for_field(field)
}

fn each<T>(
    field: Field,
    items: &[String],
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, Error> {
    items.iter().map(|s| parse(s)).collect::<Result<Vec<_>, _>>().map_err(bad(field))
}

impl SpawnRequest {
    /// The engine's request. What needs the host (the profile exists, the directory exists) is
    /// checked by the engine's spawn.
    pub fn to_spec(&self) -> Result<SpawnSpec, Error> {
        let workspace = match (&self.workspace, &self.from_dir, &self.from_git) {
            (None, None, None) => WorkspaceSource::Empty,
            (Some(dir), None, None) => WorkspaceSource::HostDir { dir: dir.into() },
            (None, Some(dir), None) => WorkspaceSource::CopyOf { dir: dir.into() },
            (None, None, Some(url)) => {
                WorkspaceSource::Git { url: url.clone(), git_ref: self.git_ref.clone() }
            }
            _ => return Err(bad(Field::Workspace)("give one of workspace, from_dir and from_git".into())),
        };
        if self.git_ref.is_some() && self.from_git.is_none() {
            return Err(bad(Field::GitRef)("ref needs from_git".into()));
        }
        let tags = self
            .tags
            .iter()
            .map(|(k, v)| agentbox_engine::agents::parse_tag(&format!("{k}={v}")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad(Field::Tags))?;
        let env = each(Field::Env, &self.env, |e| match parse_env_arg(e).map_err(|e| e.to_string())? {
            EnvArg::Inherit(k) => {
                Err(format!("'{k}': give KEY=VALUE (the server's environment is not passed)"))
            }
            set => Ok(set),
        })?;
        let network = self
            .network
            .as_deref()
            .map(str::parse::<NetworkMode>)
            .transpose()
            .map_err(bad(Field::Network))?;
        let limits = Limits {
            memory: self
                .memory
                .as_deref()
                .map(Limits::parse_memory)
                .transpose()
                .map_err(|e| bad(Field::Memory)(e.to_string()))?,
            pids: self
                .pids
                .map(|n| Limits::parse_pids(&n.to_string()))
                .transpose()
                .map_err(|e| bad(Field::Pids)(e.to_string()))?,
            cpus: self
                .cpus
                .map(|n| Limits::parse_cpus(&n.to_string()))
                .transpose()
                .map_err(|e| bad(Field::Cpus)(e.to_string()))?,
        };
        let backend =
            self.backend.as_deref().map(str::parse::<Backend>).transpose().map_err(bad(Field::Backend))?;
        let restart = self
            .restart
            .as_deref()
            .map(str::parse::<RestartPolicy>)
            .transpose()
            .map_err(bad(Field::Restart))?;
        Ok(SpawnSpec {
            name: self.name.clone(),
            profile: self.profile.clone(),
            command: self.command.iter().map(Into::into).collect(),
            prompt: self.prompt.clone().map(String::into_bytes),
            tags,
            workspace,
            network,
            egress: EgressRequest {
                allow: each(Field::Allow, &self.allow, |a| a.parse::<HostRule>())?,
                secrets: each(Field::Secrets, &self.secrets, parse_secret_arg)?,
                ask: self.ask,
            },
            env,
            limits,
            backend,
            identity: self.identity,
            volumes: each(Field::Volumes, &self.volumes, |v| parse_mount_arg(v).map_err(|e| e.to_string()))?,
            workdir: self.workdir.as_deref().map(Into::into),
            restart,
            publish: each(Field::Publish, &self.publish, |p| p.parse::<agentbox_core::PortMap>())?,
        })
    }
}

impl SpawnRequest {
    /// The body that asks a server for `spec`: the remote CLI's translation of its flags. An
    /// `--env KEY` that passes this machine's value must be resolved into `KEY=VALUE` first.
    pub fn from_spec(spec: &SpawnSpec) -> Result<Self, Error> {
        let (mut workspace, mut from_dir, mut from_git, mut git_ref) = (None, None, None, None);
        match &spec.workspace {
            WorkspaceSource::Empty => {}
            WorkspaceSource::HostDir { dir } => workspace = Some(dir.display().to_string()),
            WorkspaceSource::CopyOf { dir } => from_dir = Some(dir.display().to_string()),
            WorkspaceSource::Git { url, git_ref: r } => (from_git, git_ref) = (Some(url.clone()), r.clone()),
        }
        let env = spec
            .env
            .iter()
            .map(|e| match e {
                EnvArg::Set(k, v) => Ok(format!("{k}={v}")),
                EnvArg::Inherit(k) => Err(bad(Field::Env)(format!("'{k}' has no value to send"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let prompt = match &spec.prompt {
            Some(p) => Some(
                String::from_utf8(p.clone())
                    .map_err(|_| bad(Field::Prompt)("the prompt is not UTF-8 text".into()))?,
            ),
            None => None,
        };
        let rules = |rules: &[HostRule]| rules.iter().map(|r| r.to_string()).collect::<Vec<_>>();
        Ok(Self {
            name: spec.name.clone(),
            profile: spec.profile.clone(),
            command: spec.command.iter().map(|a| a.to_string_lossy().into_owned()).collect(),
            prompt,
            tags: spec.tags.iter().cloned().collect(),
            workspace,
            from_dir,
            from_git,
            git_ref,
            network: spec.network.map(|n| n.to_string()),
            allow: rules(&spec.egress.allow),
            secrets: spec
                .egress
                .secrets
                .iter()
                .map(|(n, hosts)| match hosts {
                    Some(h) => format!("{n}={}", rules(h).join(",")),
                    None => n.clone(),
                })
                .collect(),
            ask: spec.egress.ask,
            env,
            memory: spec.limits.memory.map(|m| m.to_string()),
            pids: spec.limits.pids,
            cpus: spec.limits.cpus,
            backend: spec.backend.map(|b| b.to_string()),
            identity: spec.identity,
            volumes: spec
                .volumes
                .iter()
                .map(|m| {
                    m.to_arg().ok_or_else(|| {
                        bad(Field::Volumes)(format!(
                            "{} cannot be sent as HOST[:SANDBOX][:ro] (':' in a path)",
                            m.source.display()
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            workdir: spec.workdir.as_ref().map(|w| w.display().to_string()),
            restart: spec.restart.map(|r| r.to_string()),
            publish: spec.publish.iter().map(ToString::to_string).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the remote CLI sends is what the server rebuilds: the two translations are inverse.
    #[test]
    fn a_spec_survives_the_trip_through_the_body() {
        let spec = SpawnSpec {
            name: "a".into(),
            profile: Some("codex".into()),
            command: vec!["sh".into(), "-c".into(), "echo hi".into()],
            prompt: Some(b"fix it".to_vec()),
            tags: vec![("team".into(), "x".into())],
            workspace: WorkspaceSource::Git {
                url: "https://example.org/r.git".into(),
                git_ref: Some("main".into()),
            },
            network: Some(NetworkMode::Proxy),
            egress: EgressRequest {
                allow: vec!["*.example.org".parse().unwrap()],
                secrets: vec![
                    ("TOKEN".into(), Some(vec!["api.example.org".parse().unwrap()])),
                    ("K".into(), None),
                ],
                ask: true,
            },
            env: vec![EnvArg::Set("A".into(), "1".into())],
            limits: Limits { memory: Some(512 << 20), pids: Some(100), cpus: Some(0.5) },
            backend: Some(Backend::Ns),
            identity: true,
            volumes: vec![parse_mount_arg("/srv/data:/data:ro").unwrap()],
            workdir: Some("sub".into()),
            restart: Some("on-failure:3:30s".parse().unwrap()),
            publish: vec!["8080:80".parse().unwrap()],
        };
        let body = SpawnRequest::from_spec(&spec).unwrap();
        let json = serde_json::to_value(&body).unwrap();
        let back: SpawnRequest = serde_json::from_value(json).unwrap();
        assert_eq!(back.to_spec().unwrap(), spec);
    }

    #[test]
    fn errors_name_the_field() {
        let req = SpawnRequest { name: "a".into(), memory: Some("lots".into()), ..Default::default() };
        assert_eq!(req.to_spec().unwrap_err().field(), Some(Field::Memory));
        let req = SpawnRequest {
            name: "a".into(),
            from_dir: Some("/x".into()),
            from_git: Some("/y".into()),
            ..Default::default()
        };
        assert_eq!(req.to_spec().unwrap_err().field(), Some(Field::Workspace));
        let req = SpawnRequest { name: "a".into(), env: vec!["HOME".into()], ..Default::default() };
        assert_eq!(req.to_spec().unwrap_err().field(), Some(Field::Env));
    }
}
