//! The supervisor role (`agentbox __supervise NAME`): the agent's own process, which owns its
//! terminal and outlives every client; it restarts the agent when its policy says so.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agentbox_core::{Backend, NetworkMode, SandboxSpec};
use agentbox_supervisor::{
    paths, supervise, AgentStore, Meanwhile, Notice, Notifier, ProxySetup, SupervisorConfig,
};
use serde_json::json;

use crate::config::Config;
use crate::error::Result;
use crate::home::Home;

/// What a supervisor forked by its spawn has already: the agent that spawn just recorded, as the
/// record's first start (generation 1). It launches the sandbox without reading the agent back,
/// and opens the store while the sandbox sets itself up, where it costs the spawn no time.
#[derive(Debug)]
pub struct Fresh {
    pub spec: SandboxSpec,
    pub state_dir: PathBuf,
    pub restart: Option<agentbox_core::RestartPolicy>,
}

/// The generation [`agentbox_store::Store::fill_claim`] gives a new agent's first start.
const FIRST_START: i64 = 1;

/// The supervisor role (`__supervise NAME`): detached from the caller's session, runs until the
/// agent ends. Returns the agent's exit status. `fresh`: see [`Fresh`]; without it, the agent
/// is read from the store.
pub fn supervise_role(name: &str, fresh: Option<Fresh>) -> Result<i32> {
    let _ = nix::unistd::setsid();
    let home = Home::open()?;
    let (spec, state_dir, generation, restart, store) = match fresh {
        Some(Fresh { spec, state_dir, restart }) => {
            let home = home.clone();
            let open = move || home.store().map_err(|e| format!("{e:#}"));
            (spec, state_dir, FIRST_START, restart, AgentStore::Later(Box::new(open)))
        }
        None => {
            let store = home.store()?;
            let rec = store.get(name)?;
            let spec = SandboxSpec::decode(&rec.spec)?;
            let restart = rec.restart.as_deref().and_then(|r| r.parse::<agentbox_core::RestartPolicy>().ok());
            (spec, PathBuf::from(rec.state_dir), rec.generation, restart, AgentStore::Open(store))
        }
    };
    let proxy = (spec.network == NetworkMode::Proxy).then(|| {
        let (home, agent, egress) = (home.clone(), name.to_string(), spec.egress.clone());
        let audit = paths::net_log(&state_dir);
        ProxySetup(Box::new(move || {
            crate::egress::proxy_config(&home, &agent, &egress, Some(&audit)).map_err(|e| e.to_string())
        }))
    });
    // A broken config.toml must not keep the agent from running: it runs with the defaults, and
    // the problem is in its supervisor.log.
    let config = Config::load(&home).unwrap_or_else(|e| {
        agentbox_core::note(format_args!("{e}; HITL and notifications use their defaults"));
        Config::default()
    });
    let hitl = config.hitl.config().unwrap_or_else(|e| {
        agentbox_core::note(format_args!("{e}; using the default HITL settings"));
        Some(Default::default())
    });
    let notifier = Arc::new(crate::notify::Notifier::new(&config.notify).unwrap_or_else(|e| {
        agentbox_core::note(format_args!("{e}; the webhook is not used"));
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
    // The guest image and accelerator are resolved here, before the sandbox is cloned: building
    // the initramfs or probing KVM must not happen in the sandbox's memory.
    let vm = match spec.backend {
        Backend::Vm => {
            let assets = crate::vm::assets(&home)?;
            // `spawn` passes notes on to the person waiting for it.
            let mut making = || {
                let mut out = std::io::stdout();
                let _ = writeln!(out, "note: {}", crate::vm::MAKING_SNAPSHOT);
                let _ = out.flush();
            };
            if let Some(line) = crate::vm::prepare_snapshot(&spec, &assets, &mut making) {
                agentbox_core::note(format_args!("{line}"));
            }
            Some(assets)
        }
        Backend::Ns => None,
    };
    let cfg = SupervisorConfig {
        name: name.to_string(),
        generation,
        log_limit: config.logs.limit().unwrap_or(agentbox_supervisor::DEFAULT_LOG_LIMIT),
        state_dir,
        store_path: home.store_path(),
        lock_path: crate::agents::lock_path(&home, name)?,
        spec,
        proxy,
        hitl,
        notify: Some(notify),
        vm,
        // The record's copy in the agent's directory (`store recover`): written while the
        // sandbox sets itself up, where it costs no time.
        meanwhile: Some(Meanwhile(Box::new({
            let name = name.to_string();
            move |store: &agentbox_store::Store| crate::recovery::save(store, &name)
        }))),
    };
    let mut stdout = std::io::stdout();
    let code = supervise(cfg, store, &mut stdout)?;
    if let Some(policy) = restart {
        if let Err(e) = crate::crashloop::after_exit(&home, name, generation, policy, &notifier) {
            agentbox_core::note(format_args!("restarting {name}: {e}"));
        }
    }
    notifier.finish(Duration::from_secs(20));
    Ok(code)
}
