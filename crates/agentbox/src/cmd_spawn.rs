//! `spawn` and `swarm`: the flags as the engine's [`SpawnSpec`], spawned here (this process is
//! single-threaded, so the sandbox is cloned from it directly) or by a server.

use agentbox_core::{validate_name, EgressRequest, Limits, MountArg, SpawnSpec, WorkspaceSource};
use agentbox_engine::control::Control;
use agentbox_engine::Context;
use anyhow::Result;

use crate::cli::{SpawnArgs, SpawnOptions, SwarmArgs};

impl SpawnOptions {
    /// The engine's request for an agent named `name` (reads the `--prompt` file).
    pub fn to_spec(&self, name: &str) -> agentbox_engine::Result<SpawnSpec> {
        let workspace = match (&self.mount, &self.from_dir, &self.from_git) {
            (Some(dir), _, _) => WorkspaceSource::HostDir { dir: absolute(dir)? },
            (None, Some(dir), _) => WorkspaceSource::CopyOf { dir: absolute(dir)? },
            (None, None, Some(url)) => {
                WorkspaceSource::Git { url: url.clone(), git_ref: self.git_ref.clone() }
            }
            (None, None, None) => WorkspaceSource::Empty,
        };
        let prompt = match &self.prompt {
            Some(p) => Some(std::fs::read(p).with_context(|| format!("--prompt {}", p.display()))?),
            None => None,
        };
        let s = &self.sandbox;
        Ok(SpawnSpec {
            name: name.to_string(),
            profile: self.profile.clone(),
            command: self.command.clone(),
            prompt,
            tags: self.tags.clone(),
            workspace,
            network: s.network,
            egress: EgressRequest { allow: s.allow.clone(), secrets: s.secrets.clone(), ask: s.ask },
            env: s.env.clone(),
            limits: Limits { memory: s.memory, pids: s.pids, cpus: s.cpus },
            backend: s.backend,
            identity: self.identity,
            // A relative HOST (`./data`) is taken from the current directory; a plain name is a
            // volume, as with docker's -v.
            volumes: self
                .volumes
                .iter()
                .map(|v| match agentbox_engine::volumes::is_volume_source(&v.source) {
                    true => Ok(v.clone()),
                    false => Ok(MountArg { source: absolute(&v.source)?, ..v.clone() }),
                })
                .collect::<agentbox_engine::Result<_>>()?,
            workdir: self.workdir.clone(),
            restart: self.restart,
            publish: self.publish.clone(),
        })
    }
}

/// A directory given on the command line, made absolute against the current directory.
fn absolute(dir: &std::path::Path) -> agentbox_engine::Result<std::path::PathBuf> {
    std::path::absolute(dir).with_context(|| format!("resolving {}", dir.display()))
}

impl SpawnOptions {
    /// On this machine, an agent with a profile spawned in a git work tree (a directory with a
    /// `.git`) with no workspace named works on a copy-on-write view of it (`--from-dir .`), as
    /// a person starting an agent in their project means; said on stderr, `--empty` opts out.
    pub fn default_workspace_here(&mut self) {
        if self.profile.is_none()
            || self.empty
            || self.mount.is_some()
            || self.from_dir.is_some()
            || self.from_git.is_some()
        {
            return;
        }
        let Ok(cwd) = std::env::current_dir() else { return };
        if std::fs::symlink_metadata(cwd.join(".git")).is_ok() {
            eprintln!(
                "agentbox: workspace: a copy-on-write view of {} (a git work tree; --empty for a fresh one)",
                cwd.display()
            );
            self.from_dir = Some(cwd);
        }
    }
}

pub fn spawn(c: &dyn Control, args: SpawnArgs) -> Result<i32> {
    println!("{}", c.spawn(&args.opts.to_spec(&args.name)?)?.name);
    Ok(0)
}

pub fn swarm(c: &dyn Control, args: SwarmArgs) -> Result<i32> {
    validate_name(&args.base)?;
    anyhow::ensure!((1..=1000).contains(&args.count), "swarm size must be between 1 and 1000");
    // Like the other verbs on several agents: each one started is printed, each failure said,
    // and the rest still started; what runs is named at the end if any failed.
    let mut started = Vec::new();
    let mut failed = 0;
    for i in 1..=args.count {
        let name = format!("{}-{i}", args.base);
        match args.opts.to_spec(&name).and_then(|spec| c.spawn(&spec)) {
            Ok(_) => {
                println!("{name}");
                started.push(name);
            }
            Err(e) => {
                eprintln!("agentbox: {name}: {e:#}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        let running = if started.is_empty() { "none".to_string() } else { started.join(" ") };
        eprintln!(
            "agentbox: {failed} of {} not started; running: {running} (remove them with `agentbox rm -f NAME...`)",
            args.count
        );
    }
    Ok(i32::from(failed > 0))
}
