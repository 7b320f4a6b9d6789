//! `spawn`, `swarm` and the hidden `__supervise` role.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use agentbox_core::{validate_name, Backend, EgressSpec, EnvArg, HomeSpec, NetworkMode, SandboxSpec};
use agentbox_jail::{resolve, HostContext, SandboxRequest};
use agentbox_store::NewAgent;
use agentbox_supervisor::{paths, supervise, Notice, Notifier, ProxySetup, SupervisorConfig};
use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::cli::{SpawnArgs, SpawnOptions, SwarmArgs};
use crate::crashloop::RestartPolicy;
use crate::egress::Config;
use crate::home::{private_dir, Home};
use crate::profiles::{self, Found};
use crate::secrets::Secrets;
use crate::tree::{copy_tree, remove_tree};

fn default_shell() -> Vec<std::ffi::OsString> {
    if Path::new("/bin/bash").exists() {
        vec!["/bin/bash".into()]
    } else {
        vec!["/bin/sh".into()]
    }
}

/// Creates the agent's directories and spec. Nothing is recorded yet. Returns the spec and the
/// keys to type once the agent runs (the profile's startup keys).
fn prepare(home: &Home, name: &str, args: &SpawnOptions) -> Result<(SandboxSpec, Vec<u8>)> {
    let dir = home.agent_dir(name);
    private_dir(&dir)?;
    crate::tree::agent_dir(&paths::home(&dir))?;
    let profile = match &args.profile {
        Some(p) => {
            let profile = profiles::load(home, p)?;
            let secrets = Secrets::load(home)?;
            let host_home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
            let opted_in = Config::load(home)?.profiles.get(p).map(|s| s.seed.clone()).unwrap_or_default();
            let applied = profiles::apply(&profile, &host_home, &secrets, &paths::home(&dir), &opted_in)?;
            for w in &applied.warnings {
                eprintln!("agentbox: warning: {w}");
            }
            Some((profile, applied))
        }
        None => None,
    };
    let workspace = match &args.mount {
        Some(m) => m.clone(),
        None => {
            let ws = paths::workspace(&dir);
            match (&args.from_dir, &args.from_git) {
                (Some(src), _) => {
                    anyhow::ensure!(src.is_dir(), "--from-dir {}: not a directory", src.display());
                    copy_tree(src, &ws)?
                }
                (None, Some(url)) => {
                    crate::tree::agent_dir(&ws)?;
                    // A repository that cannot be cloned is the request's problem, not the server's.
                    crate::sandboxed_git::clone(url, args.git_ref.as_deref(), &ws)
                        .map_err(|e| crate::service::invalid(format!("{e:#}")))?;
                }
                (None, None) => crate::tree::agent_dir(&ws)?,
            }
            ws
        }
    };
    // A CMD after `--` replaces the profile's command; the profile's sandbox settings still apply.
    // The caller's --env and --network win over the profile's.
    let (command, mut mounts, mut env, hidden, found, keys, profile) = match profile {
        Some((p, a)) => {
            let keys = p.startup_keys.clone().into_bytes();
            (a.command, a.mounts, a.env, a.hidden, a.credentials, keys, Some(p))
        }
        None => (default_shell(), vec![], vec![], vec![], vec![], vec![], None),
    };
    let backend = args.sandbox.backend.or(profile.as_ref().and_then(|p| p.backend)).unwrap_or_default();
    // Agent profiles default to the proxy: their provider is reachable, their keys stay here.
    let network =
        args.sandbox.network_mode(profile.as_ref().map(|p| p.network.unwrap_or(NetworkMode::Proxy)));
    let flags = args.sandbox.egress();
    let secrets = Secrets::load(home)?;
    crate::egress::check_flag_secrets(&flags, &secrets)?;
    let (egress, ca) = match network {
        NetworkMode::Proxy => {
            let spec = crate::egress::build_spec(&Config::load(home)?, profile.as_ref(), &found, &flags)?;
            let ca = if spec.secrets.is_empty() { None } else { Some(crate::egress::ca_files(home)?) };
            (spec, ca)
        }
        NetworkMode::Full => {
            // No proxy to swap placeholders: the agent gets the values themselves.
            let names = found.iter().chain(flags.secrets.iter().map(|(n, _)| n));
            for name in names {
                if let Some(Found::Environment(v) | Found::Stored(v)) =
                    profiles::find_credential(name, &secrets)
                {
                    env.push(EnvArg::Set(name.clone(), v));
                }
            }
            (EgressSpec::default(), None)
        }
        NetworkMode::None => {
            if !found.is_empty() {
                eprintln!("agentbox: warning: --network none: {} not passed to the agent", found.join(", "));
            }
            (EgressSpec::default(), None)
        }
    };
    if args.identity {
        let did = crate::identity::create(&dir, &paths::home(&dir), name)?;
        eprintln!("agentbox: {name} is {did}");
        env.extend(crate::identity::git_env(name));
    }
    env.extend(args.sandbox.env.iter().cloned());
    mounts.retain(|m| m.target.as_deref() != Some(workspace.as_path()));
    mounts.extend(args.volumes.iter().cloned());
    let request = SandboxRequest {
        command: if args.command.is_empty() { command } else { args.command.clone() },
        workspace: Some(workspace),
        mounts,
        network,
        egress,
        ca,
        env,
        limits: args.sandbox.limits(),
        hostname: Some(name.to_string()),
        home: Some(HomeSpec::Bind(paths::home(&dir))),
        hidden,
        workdir: args.workdir.clone(),
        backend,
        ..Default::default()
    };
    if backend == Backend::Vm {
        crate::cmd_vm::check_ready()?;
    }
    // What agentbox wrote into the agent's home (instructions, identity) is the agent's.
    crate::tree::give_to_agent(&paths::home(&dir))?;
    Ok((resolve(request, &HostContext::current()?)?, keys))
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
    // Stored as typed (with Enter), so `restart` replays exactly the same keys.
    let text = match (&args.prompt, &args.prompt_text) {
        (Some(p), _) => Some(std::fs::read(p).with_context(|| format!("--prompt {}", p.display()))?),
        (None, Some(t)) => Some(t.clone().into_bytes()),
        (None, None) => None,
    };
    let prompt = text.map(|mut text| {
        if !text.ends_with(b"\r") && !text.ends_with(b"\n") {
            text.push(b'\r');
        }
        text
    });
    let undo = |e: anyhow::Error| {
        let _ = remove_tree(&dir);
        e
    };
    let (spec, startup_keys) = prepare(home, name, args).map_err(undo)?;
    crate::cmd_diff::record_snapshot(&dir, &spec.workspace).map_err(undo)?;
    if args.identity {
        crate::cmd_diff::record_commit_base(&dir, &spec.workspace).map_err(undo)?;
    }
    crate::hooks::run(home, "pre-spawn", name, &spec.workspace).map_err(undo)?;
    let spec_json = spec.encode().map_err(|e| undo(e.into()))?;
    let state_dir = dir.to_string_lossy();
    let restart = args.restart.map(|r| r.to_string());
    let new = NewAgent {
        restart: restart.as_deref(),
        name,
        spec_json: &spec_json,
        state_dir: &state_dir,
        tags: &args.tags,
        profile: args.profile.as_deref(),
        prompt: prompt.as_deref(),
        state: None,
    };
    store.create_agent(&new).map_err(|e| undo(e.into()))?;

    let started = start_supervisor(home, name, &dir);
    if let Err(e) = started {
        let _ = store.delete(name);
        let _ = store.record(name, "spawn-failed", &format!("{e:#}"));
        let _ = remove_tree(&dir);
        return Err(e);
    }
    type_after_start(&dir, &startup_keys, prompt.as_deref())?;
    if let Err(e) = crate::hooks::run(home, "post-spawn", name, &spec.workspace) {
        eprintln!("agentbox: warning: {e:#}");
    }
    Ok(())
}

/// Types the profile's startup keys, then the prompt, into a freshly started agent.
pub fn type_after_start(dir: &Path, startup_keys: &[u8], prompt: Option<&[u8]>) -> Result<()> {
    if !startup_keys.is_empty() {
        agentbox_supervisor::send_input(dir, startup_keys).context("typing the profile's startup keys")?;
    }
    if let Some(p) = prompt {
        agentbox_supervisor::send_input(dir, p).context("typing the prompt")?;
    }
    Ok(())
}

pub fn start_supervisor(home: &Home, name: &str, dir: &Path) -> Result<()> {
    let log = std::fs::File::create(dir.join("supervisor.log")).context("creating supervisor.log")?;
    let mut child = crate::home::self_command()
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
    let mut reader = child.stdout.take().map(BufReader::new);
    if let Some(out) = reader.as_mut() {
        out.read_line(&mut line).context("waiting for the supervisor")?;
    }
    match line.trim_end().strip_prefix("error: ") {
        None if line.trim_end() == "ok" => Ok(()),
        Some(msg) => {
            let mut second = String::new();
            if let Some(out) = reader.as_mut() {
                let _ = out.read_line(&mut second);
            }
            if second.trim_end() == agentbox_supervisor::INVALID_COMMAND {
                bail!(crate::service::invalid(msg));
            }
            bail!("{msg}")
        }
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
    let spec = SandboxSpec::decode(&rec.spec)?;
    let state_dir = PathBuf::from(rec.state_dir);
    let proxy = (spec.network == NetworkMode::Proxy).then(|| {
        let (home, agent, egress) = (home.clone(), name.to_string(), spec.egress.clone());
        let audit = paths::net_log(&state_dir);
        ProxySetup(Box::new(move || {
            crate::egress::proxy_config(&home, &agent, &egress, Some(&audit)).map_err(|e| format!("{e:#}"))
        }))
    });
    // A broken config.toml must not keep the agent from running: it runs with the defaults, and
    // the problem is in its supervisor.log.
    let config = Config::load(&home).unwrap_or_else(|e| {
        eprintln!("agentbox: {e:#}; HITL and notifications use their defaults");
        Config::default()
    });
    let hitl = config.hitl.config().unwrap_or_else(|e| {
        eprintln!("agentbox: {e:#}; using the default HITL settings");
        Some(Default::default())
    });
    let notifier = Arc::new(crate::notify::Notifier::new(&config.notify).unwrap_or_else(|e| {
        eprintln!("agentbox: {e:#}; the webhook is not used");
        crate::notify::Notifier::default()
    }));
    let agent_exits = config.notify.agent_exits != Some(false);
    let n = Arc::clone(&notifier);
    let notify = Notifier(Box::new(move |agent: &str, notice: &Notice| match notice {
        Notice::Hitl { id, kind, prompt } => n.send(
            "hitl.opened",
            &format!("{agent} is waiting for an answer"),
            prompt,
            json!({"agent": agent, "hitl_id": id, "kind": kind, "prompt": prompt,
                   "answer": format!("agentbox hitl answer {id} TEXT")}),
        ),
        Notice::Ended { state, code } if agent_exits => n.send(
            "agent.ended",
            &format!("{agent} {state}"),
            &format!("exit code {code}"),
            json!({"agent": agent, "state": state, "exit_code": code}),
        ),
        Notice::Ended { .. } => {}
    }));
    let restart = rec.restart.as_deref().and_then(|r| r.parse::<RestartPolicy>().ok());
    // The guest image and accelerator are resolved here, before the sandbox is cloned: building
    // the initramfs or probing KVM must not happen in the sandbox's memory.
    let vm = match spec.backend {
        Backend::Vm => Some(crate::cmd_vm::assets(&home)?),
        Backend::Ns => None,
    };
    let cfg = SupervisorConfig {
        name: name.to_string(),
        state_dir,
        store_path: home.store_path(),
        spec,
        proxy,
        hitl,
        notify: Some(notify),
        vm,
    };
    drop(store);
    let mut stdout = std::io::stdout();
    let code = supervise(cfg, &mut stdout)?;
    if let Some(policy) = restart {
        if let Err(e) = crate::crashloop::after_exit(&home, name, policy, &notifier) {
            eprintln!("agentbox: restarting {name}: {e:#}");
        }
    }
    notifier.finish(Duration::from_secs(20));
    Ok(code)
}
