//! `list` and `history` (here or on a server), `info` and `root` (this machine).

use agentbox_core::SandboxSpec;
use agentbox_supervisor::paths;
use anyhow::Result;

use crate::cli::{HistoryArgs, InfoArgs, ListArgs};
use agentbox_engine::agents::{self, age, describe_state};
use agentbox_engine::control::Control;
use agentbox_engine::views::Filter;
use agentbox_engine::Home;

fn spec_of(rec: &agentbox_store::AgentRecord) -> Option<SandboxSpec> {
    SandboxSpec::decode(&rec.spec).ok()
}

pub fn list(c: &dyn Control, args: ListArgs) -> Result<i32> {
    let filter = Filter { tags: args.tags.clone(), status: args.status.clone() };
    let agents = c.list(&filter)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&agents)?);
    } else if args.quiet {
        for a in &agents {
            println!("{}", a.name);
        }
    } else if let Some(t) = &args.format {
        for a in &agents {
            println!("{}", t.render(|field| field_of(a, field)));
        }
    } else {
        println!("{:<20} {:<12} {:<8} {:<6} {:<24} COMMAND", "NAME", "STATE", "PID", "AGE", "TAGS");
        for a in &agents {
            let tags: Vec<String> = a.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let pid = a.supervisor_pid.filter(|_| a.is_live()).map(|p| p.to_string()).unwrap_or("-".into());
            println!(
                "{:<20} {:<12} {:<8} {:<6} {:<24} {}",
                a.name,
                a.describe_state(),
                pid,
                age(a.created_at),
                if tags.is_empty() { "-".into() } else { tags.join(",") },
                a.command.join(" ")
            );
        }
    }
    Ok(0)
}

/// A field of `--format`, as `list` shows it.
fn field_of(a: &agentbox_engine::views::AgentView, field: crate::format::Field) -> String {
    use crate::format::Field;
    match field {
        Field::Name => a.name.clone(),
        Field::State => a.state.to_string(),
        Field::ExitCode => a.exit_code.map(|c| c.to_string()).unwrap_or_default(),
        Field::Pid => a.supervisor_pid.filter(|_| a.is_live()).map(|p| p.to_string()).unwrap_or_default(),
        Field::Age => age(a.created_at),
        Field::Profile => a.profile.clone().unwrap_or_default(),
        Field::Network => a.network.clone(),
        Field::Tags => a.tags.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
        Field::Workspace => a.workspace.clone(),
        Field::Command => a.command.join(" "),
    }
}

pub fn info(args: InfoArgs) -> Result<i32> {
    let home = Home::open()?;
    let store = home.store()?;
    let rec = agents::get(&store, &args.name)?;
    let dir = agents::state_dir(&rec);
    let log_bytes = std::fs::metadata(paths::log(&dir)).map(|m| m.len()).unwrap_or(0);
    let spec = spec_of(&rec);
    // A VM agent: which accelerator its VM runs with here (remembered from the first probe;
    // `info` never builds an initramfs or probes KVM itself).
    let accel = match spec.as_ref().map(|s| s.backend) {
        Some(agentbox_core::Backend::Vm) => agentbox_engine::home::vm_image_dir()
            .ok()
            .and_then(|dir| agentbox_supervisor::VmAssets::known_accel(&dir, &home.vm_work_dir())),
        _ => None,
    };
    let checkpoints = agentbox_engine::workspace::checkpoint::list(&store, &rec.name).unwrap_or_default();
    if args.json {
        let v = serde_json::json!({
            "checkpoints": checkpoints,
            "agent": rec,
            "spec": spec,
            "backend": spec.as_ref().map(|s| s.backend.to_string()),
            "accel": accel.as_ref().map(|a| a.name()),
            "accel_reason": match &accel { Some(agentbox_vm::Accel::Tcg { reason }) => Some(reason.clone()), _ => None },
            "state_dir": dir,
            "log": paths::log(&dir),
            "log_bytes": log_bytes,
            "socket": paths::socket(&dir),
            "identity": agentbox_engine::identity::did(&dir),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    println!("name:        {}", rec.name);
    println!("state:       {}", describe_state(&rec));
    if let Some(p) = rec.supervisor_pid {
        println!("supervisor:  pid {p}");
    }
    println!("created:     {} ago", age(rec.created_at));
    if let Some(s) = &spec {
        let cmd: Vec<String> = s.command.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        println!("command:     {}", cmd.join(" "));
        println!("workspace:   {}", s.workspace.display());
        match &accel {
            Some(a) => println!("backend:     vm, {}", crate::cmd_vm::describe(a)),
            None => println!("backend:     {}", s.backend),
        }
        println!("network:     {}", s.network);
        if s.network == agentbox_core::NetworkMode::Full {
            println!("             warning: full network access, including services on host loopback;");
            println!("             credentials are passed to the agent as they are");
        }
        if s.network == agentbox_core::NetworkMode::Proxy {
            let allow: Vec<String> = s.egress.allow.iter().map(|r| r.to_string()).collect();
            println!("allow:       {}", if allow.is_empty() { "-".into() } else { allow.join(", ") });
            for b in &s.egress.secrets {
                let hosts: Vec<String> = b.hosts.iter().map(|r| r.to_string()).collect();
                println!("secret:      {} -> {} (placeholder inside)", b.env, hosts.join(", "));
            }
            if s.egress.ask {
                println!("ask:         requests to other hosts wait for `agentbox allow`");
            }
            println!("audit:       {}", paths::net_log(&dir).display());
        }
        if !s.limits.is_empty() {
            println!("limits:      {}", s.limits.summary());
        }
        if let Some(idle) = s.pause_after {
            println!("pause after: {} idle (input resumes it)", agentbox_core::format_duration(idle));
        }
    }
    if let Some(last) = checkpoints.last() {
        println!(
            "checkpoints: {} (last: {}, {} ago{})",
            checkpoints.len(),
            last.id,
            age(last.created_ms),
            if last.message.is_empty() {
                String::new()
            } else {
                format!(", {}", agentbox_core::termfilter::escape_for_terminal(&last.message))
            }
        );
    }
    if let Some(did) = agentbox_engine::identity::did(&dir) {
        println!("identity:    {did}");
    }
    let tags: Vec<String> = rec.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("tags:        {}", if tags.is_empty() { "-".into() } else { tags.join(", ") });
    println!("state dir:   {}", dir.display());
    println!("log:         {} ({log_bytes} bytes)", paths::log(&dir).display());
    Ok(0)
}

pub fn history(c: &dyn Control, args: HistoryArgs) -> Result<i32> {
    let events = c.events(args.lines, args.event.as_deref())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&events)?);
    } else {
        for e in events {
            println!(
                "{:>6} ago  {:<14} {:<20} {}",
                age(e.at),
                e.event,
                e.agent,
                agentbox_core::termfilter::escape_for_terminal(&e.detail)
            );
        }
    }
    Ok(0)
}

pub fn root() -> Result<i32> {
    println!("{}", Home::open()?.root.display());
    Ok(0)
}
