//! `spawn`, `swarm` and the hidden `__supervise` role.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use agentbox_core::{validate_name, HomeSpec, SandboxSpec};
use agentbox_jail::{resolve, HostContext, SandboxRequest};
use agentbox_supervisor::{paths, supervise, SupervisorConfig};
use anyhow::{bail, Context, Result};

use crate::cli::{SpawnArgs, SpawnOptions, SwarmArgs};
use crate::home::{private_dir, Home};
use crate::tree::{copy_tree, remove_tree};

fn default_shell() -> Vec<std::ffi::OsString> {
    if Path::new("/bin/bash").exists() {
        vec!["/bin/bash".into()]
    } else {
        vec!["/bin/sh".into()]
    }
}

/// Creates the agent's directories and spec. Nothing is recorded yet.
fn prepare(home: &Home, name: &str, args: &SpawnOptions) -> Result<SandboxSpec> {
    let dir = home.agent_dir(name);
    private_dir(&dir)?;
    private_dir(&paths::home(&dir))?;
    let workspace = match &args.mount {
        Some(m) => m.clone(),
        None => {
            let ws = paths::workspace(&dir);
            match &args.from_dir {
                Some(src) => {
                    anyhow::ensure!(src.is_dir(), "--from-dir {}: not a directory", src.display());
                    copy_tree(src, &ws)?
                }
                None => private_dir(&ws)?,
            }
            ws
        }
    };
    let request = SandboxRequest {
        command: if args.command.is_empty() { default_shell() } else { args.command.clone() },
        workspace: Some(workspace),
        network: args.sandbox.network,
        env: args.sandbox.env.clone(),
        limits: args.sandbox.limits(),
        hostname: Some(name.to_string()),
        home: Some(HomeSpec::Bind(paths::home(&dir))),
        ..Default::default()
    };
    Ok(resolve(request, &HostContext::current()?)?)
}

/// Starts one agent; returns once its command runs inside the sandbox.
pub fn spawn_one(home: &Home, name: &str, args: &SpawnOptions) -> Result<()> {
    validate_name(name)?;
    let mut store = home.store()?;
    if store.get(name).is_ok() {
        return Err(agentbox_store::StoreError::Exists(name.to_string()).into());
    }
    let dir = home.agent_dir(name);
    anyhow::ensure!(
        !dir.exists(),
        "{} exists but no agent '{name}' is recorded; move it away or remove it",
        dir.display()
    );
    let prompt = match &args.prompt {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("--prompt {}", p.display()))?),
        None => None,
    };
    let undo = |e: anyhow::Error| {
        let _ = remove_tree(&dir);
        e
    };
    let spec = prepare(home, name, args).map_err(undo)?;
    let spec_json = serde_json::to_string(&spec).context("encoding the spec").map_err(undo)?;
    store.create_agent(name, &spec_json, &dir.to_string_lossy(), &args.tags).map_err(|e| undo(e.into()))?;

    let started = start_supervisor(home, name, &dir);
    if let Err(e) = started {
        let _ = store.delete(name);
        let _ = store.record(name, "spawn-failed", &format!("{e:#}"));
        let _ = remove_tree(&dir);
        return Err(e);
    }
    if let Some(p) = prompt {
        let mut text = p;
        if !text.ends_with(b"\r") && !text.ends_with(b"\n") {
            text.push(b'\r');
        }
        agentbox_supervisor::send_input(&dir, &text).context("typing the prompt")?;
    }
    Ok(())
}

fn start_supervisor(home: &Home, name: &str, dir: &Path) -> Result<()> {
    let exe = std::env::current_exe().context("locating the agentbox binary")?;
    let log = std::fs::File::create(dir.join("supervisor.log")).context("creating supervisor.log")?;
    let mut child = Command::new(exe)
        .arg("__supervise")
        .arg(name)
        .env("AGENTBOX_HOME", &home.root)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("starting the supervisor")?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        BufReader::new(out).read_line(&mut line).context("waiting for the supervisor")?;
    }
    match line.trim_end().strip_prefix("error: ") {
        None if line.trim_end() == "ok" => Ok(()),
        Some(msg) => bail!("{msg}"),
        None => {
            let _ = child.wait();
            let log = std::fs::read_to_string(dir.join("supervisor.log")).unwrap_or_default();
            bail!("the supervisor exited before the agent started: {}", log.trim())
        }
    }
}

pub fn spawn(args: SpawnArgs) -> Result<i32> {
    let home = Home::open()?;
    spawn_one(&home, &args.name, &args.opts)?;
    println!("{}", args.name);
    Ok(0)
}

pub fn swarm(args: SwarmArgs) -> Result<i32> {
    validate_name(&args.base)?;
    anyhow::ensure!((1..=1000).contains(&args.count), "swarm size must be between 1 and 1000");
    let home = Home::open()?;
    for i in 1..=args.count {
        let name = format!("{}-{i}", args.base);
        spawn_one(&home, &name, &args.opts).with_context(|| format!("spawning {name}"))?;
        println!("{name}");
    }
    Ok(0)
}

/// The supervisor role: detached from the caller's session, runs until the agent ends.
pub fn supervise_role(name: &str) -> Result<i32> {
    let _ = nix::unistd::setsid();
    let home = Home::open()?;
    let store = home.store()?;
    let rec = store.get(name)?;
    let spec: SandboxSpec = serde_json::from_str(&rec.spec).context("decoding the stored spec")?;
    let cfg = SupervisorConfig {
        name: name.to_string(),
        state_dir: rec.state_dir.into(),
        store_path: home.store_path(),
        spec,
    };
    drop(store);
    let mut stdout = std::io::stdout();
    Ok(supervise(cfg, &mut stdout)?)
}
