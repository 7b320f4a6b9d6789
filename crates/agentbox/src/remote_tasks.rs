//! `task` and `hitl` against a server (`--server`, contexts).

use std::io::Write;
use std::time::Duration;

use agentbox_core::termfilter::escape_for_terminal as esc;
use anyhow::{Context, Result};
use serde_json::Value;

use crate::cli::{HitlArgs, HitlCommand, TaskArgs, TaskCommand};
use crate::remote::Remote;
use agentbox_engine::tasks::artifacts::Artifact;
use agentbox_engine::tasks::TaskView;

/// The manifest file as a JSON document (checked here first, so mistakes are named locally).
fn manifest_value(file: &std::path::Path) -> Result<Value> {
    crate::cmd_task::read_manifest(file)?;
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    Ok(agentbox_core::manifest_document(&text, agentbox_core::ManifestFormat::of_path(file))?)
}

fn view(v: Value) -> Result<TaskView> {
    serde_json::from_value(v).context("reading the server's answer")
}

fn wait_final(remote: &Remote, id: &str) -> Result<TaskView> {
    loop {
        let t = view(remote.get(&format!("/api/v1/tasks/{id}"))?)?;
        if t.state.is_final() {
            return Ok(t);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

pub fn task(remote: &Remote, args: TaskArgs) -> Result<i32> {
    match args.command {
        TaskCommand::Submit { file, wait, json } => {
            anyhow::ensure!(file != std::path::Path::new("-"), "with --server, give the manifest as a file");
            let body = serde_json::json!({ "manifest": manifest_value(&file)? });
            let t = view(remote.post("/api/v1/tasks", Some(&body))?)?;
            println!("{}", if json && !wait { serde_json::to_string_pretty(&t)? } else { t.id.clone() });
            if !wait {
                return Ok(0);
            }
            let t = wait_final(remote, &t.id)?;
            eprintln!("task {} {}", t.id, esc(&t.describe()));
            Ok(i32::from(t.state != agentbox_core::TaskState::Completed))
        }
        TaskCommand::List { json } => {
            let v = remote.get("/api/v1/tasks")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for t in serde_json::from_value::<Vec<TaskView>>(v)? {
                    println!("{:<14} {:<13} {:<24} {}", t.id, t.state, esc(&t.name), esc(&t.reason));
                }
            }
            Ok(0)
        }
        TaskCommand::Show { id, json } => {
            let v = remote.get(&format!("/api/v1/tasks/{id}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let t = view(v.clone())?;
                println!(
                    "id:      {}\nname:    {}\nstate:   {}\nagent:   {} (attempt {})",
                    t.id,
                    esc(&t.name),
                    esc(&t.describe()),
                    t.agent.as_deref().unwrap_or("-"),
                    t.attempt
                );
                for e in v["events"].as_array().into_iter().flatten() {
                    println!(
                        "  {:<24} {}",
                        e["event"].as_str().unwrap_or(""),
                        esc(e["detail"].as_str().unwrap_or(""))
                    );
                }
            }
            Ok(0)
        }
        TaskCommand::Logs { id, follow } => {
            let mut printed = 0;
            let mut out = std::io::stdout().lock();
            loop {
                let text = remote.get(&format!("/api/v1/tasks/{id}/logs"))?;
                let text = text.as_str().unwrap_or("");
                // A retry starts a new log: print it from its start.
                if text.len() < printed {
                    printed = 0;
                }
                out.write_all(&text.as_bytes()[printed..])?;
                out.flush()?;
                printed = text.len();
                if !follow || view(remote.get(&format!("/api/v1/tasks/{id}"))?)?.state.is_final() {
                    return Ok(0);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        TaskCommand::Cancel { id } => {
            let t = view(remote.send("DELETE", &format!("/api/v1/tasks/{id}"), None)?)?;
            let t = if t.state.is_final() { t } else { wait_final(remote, &t.id)? };
            println!("task {} {}", t.id, esc(&t.describe()));
            Ok(0)
        }
        TaskCommand::Artifacts { id, download, json } => {
            let list: Vec<Artifact> =
                serde_json::from_value(remote.get(&format!("/api/v1/tasks/{id}/artifacts"))?)?;
            if let Some(dest) = &download {
                for a in &list {
                    // The names come from the server: nothing outside DIR.
                    agentbox_engine::tasks::artifacts::check_rel(&a.path)?;
                    let bytes = remote
                        .download(&format!("/api/v1/tasks/{id}/artifacts/{}", a.path.replace('/', "%2F")))?;
                    let to = dest.join(&a.path);
                    if let Some(p) = to.parent() {
                        std::fs::create_dir_all(p)?;
                    }
                    std::fs::write(&to, bytes).with_context(|| format!("writing {}", to.display()))?;
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for a in &list {
                    println!("{:>10}  {}", a.size, esc(&a.path));
                }
            }
            Ok(0)
        }
    }
}

pub fn hitl(remote: &Remote, args: HitlArgs) -> Result<i32> {
    match args.command {
        HitlCommand::List { json, all } => {
            let v = remote.get(if all { "/api/v1/hitl?all=true" } else { "/api/v1/hitl" })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for r in v.as_array().into_iter().flatten() {
                    println!(
                        "{:<6} {:<20} {:<9} {}",
                        r["id"],
                        r["agent"].as_str().unwrap_or(""),
                        r["state"].as_str().unwrap_or(""),
                        esc(r["prompt"].as_str().unwrap_or(""))
                    );
                }
            }
            Ok(0)
        }
        HitlCommand::Answer { id, text, no_enter } => {
            let body = serde_json::json!({ "text": text, "enter": !no_enter });
            let r = remote.post(&format!("/api/v1/hitl/{id}/answer"), Some(&body))?;
            println!("answered #{} ({})", r["id"], r["agent"].as_str().unwrap_or(""));
            Ok(0)
        }
    }
}
