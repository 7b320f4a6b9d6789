//! A proxy-mode agent's network, from outside: allow a host, read its audit records.

use agentbox_core::{HostRule, NetworkMode, SandboxSpec};
use agentbox_store::Store;
use agentbox_supervisor::paths;

use crate::agents::{self, is_live_state};
use crate::bail;
use crate::error::{Context, Error, Result};
use crate::home::Home;

/// Lets a proxy-mode agent reach `host`: now (if it runs) and, unless `once`, after restarts.
pub fn allow(
    home: &Home,
    store: &Store,
    name: &str,
    host: &HostRule,
    once: bool,
    always: bool,
) -> Result<()> {
    let (rec, mut spec) = proxied(store, name)?;
    if once && always {
        bail!(Error::invalid("once and always exclude each other"));
    }
    let rule = host.to_string();
    let running = is_live_state(&rec.state);
    if running {
        agentbox_supervisor::allow_host(&agents::state_dir(&rec), &rule, once)?;
    } else if once {
        bail!(Error::conflict(format!("{name} is not running; --once applies to a running agent")));
    }
    if !once {
        // Kept with the agent, so a restart keeps it.
        if !spec.egress.allow.contains(host) {
            spec.egress.allow.push(host.clone());
            store.set_spec(name, &spec.encode()?)?;
            crate::recovery::save(store, name);
        }
        if !running {
            store.record(name, "allow", &format!("{rule} (from the next start)"))?;
        }
    }
    if always {
        crate::config::Config::add_allow(home, host.clone())?;
    }
    Ok(())
}

/// An agent with an allowlist (`--network proxy`) and its spec; others are refused.
fn proxied(store: &Store, name: &str) -> Result<(agentbox_store::AgentRecord, SandboxSpec)> {
    let rec = agents::get(store, name)?;
    let spec = SandboxSpec::decode(&rec.spec)?;
    if spec.network != NetworkMode::Proxy {
        bail!(Error::conflict(format!(
            "{name} runs with --network {}; only agents with --network proxy have an allowlist",
            spec.network
        )));
    }
    Ok((rec, spec))
}

/// Takes `host` off an agent's allowlist (its running proxy's and its stored spec's, so a
/// restart keeps it off); with `always` off the config's `[network] allow` too. Hosts a secret
/// is bound to stay reachable while the secret is.
pub fn revoke(home: &Home, store: &Store, name: &str, host: &HostRule, always: bool) -> Result<()> {
    let (rec, mut spec) = proxied(store, name)?;
    let in_config = always && crate::config::Config::load(home)?.network.allow.contains(host);
    let known = spec.egress.allow.contains(host) || in_config;
    // The running proxy's list also holds one-shot grants not used yet (`allow --once`).
    let in_proxy = if is_live_state(&rec.state) {
        match agentbox_supervisor::revoke_host(&agents::state_dir(&rec), &host.to_string()) {
            Ok(()) => true,
            Err(agentbox_supervisor::ClientError::Refused(_)) => false,
            Err(e) => return Err(e.into()),
        }
    } else {
        false
    };
    if !known && !in_proxy {
        let listed: Vec<String> = spec.egress.allow.iter().map(ToString::to_string).collect();
        bail!(Error::not_found(format!(
            "{host} is not on {name}'s allowlist (it has: {})",
            if listed.is_empty() { "nothing".to_string() } else { listed.join(", ") }
        )));
    }
    if !is_live_state(&rec.state) {
        store.record(name, "deny", &format!("{host} (from the next start)"))?;
    }
    spec.egress.allow.retain(|r| r != host);
    store.set_spec(name, &spec.encode()?)?;
    crate::recovery::save(store, name);
    if always {
        crate::config::Config::remove_allow(home, host)?;
    }
    Ok(())
}

/// An agent's audit records, oldest first (the last `limit`).
pub fn net_records(store: &Store, name: &str, limit: usize) -> Result<Vec<agentbox_proxy::AuditRecord>> {
    let rec = agents::get(store, name)?;
    let path = paths::net_log(&agents::state_dir(&rec));
    let mut records =
        agentbox_proxy::read_records(&path).with_context(|| format!("reading {}", path.display()))?;
    let skip = records.len().saturating_sub(limit);
    records.drain(..skip);
    Ok(records)
}
