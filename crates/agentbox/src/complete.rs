//! Shell completion that knows this machine: agent names, profiles and task ids, read when the
//! shell asks (`agentbox completion bash|zsh|fish` prints the hook that asks this binary).
//! A home without a store completes the built-in profiles only; an error completes nothing.

use clap_complete::engine::CompletionCandidate;

use agentbox_engine::Home;

/// The environment variable the shell hook sets to ask for completions.
pub const VAR: &str = "AGENTBOX_COMPLETE";

fn home() -> Option<Home> {
    let home = Home::open().ok()?;
    home.store_path().exists().then_some(home)
}

pub fn agent_names() -> Vec<CompletionCandidate> {
    let Some(home) = home() else { return Vec::new() };
    let Ok(store) = home.store() else { return Vec::new() };
    store
        .list()
        .unwrap_or_default()
        .into_iter()
        .map(|a| CompletionCandidate::new(a.name.clone()).help(Some(a.state.to_string().into())))
        .collect()
}

pub fn profile_names() -> Vec<CompletionCandidate> {
    let profiles = match home() {
        Some(h) => agentbox_engine::profiles::all(&h).unwrap_or_default(),
        None => Vec::new(),
    };
    let mut out: Vec<CompletionCandidate> = profiles
        .into_iter()
        .map(|(p, _)| CompletionCandidate::new(p.name.clone()).help(Some(p.description.into())))
        .collect();
    if out.is_empty() {
        out = agentbox_core::BUILTIN_PROFILES.iter().map(|(n, _)| CompletionCandidate::new(*n)).collect();
    }
    out
}

pub fn task_ids() -> Vec<CompletionCandidate> {
    let Some(home) = home() else { return Vec::new() };
    let Ok(store) = home.store() else { return Vec::new() };
    store
        .tasks()
        .unwrap_or_default()
        .into_iter()
        .map(|t| CompletionCandidate::new(t.id.clone()).help(Some(t.state.to_string().into())))
        .collect()
}
