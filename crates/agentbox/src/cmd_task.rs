//! `agentbox task ...`, here or on a server.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use agentbox_core::termfilter::escape_for_terminal as esc;
use agentbox_core::ManifestFormat;
use anyhow::{Context, Result};

use agentbox_engine::agents::age;
use agentbox_engine::control::Control;
use agentbox_engine::tasks::{self, TaskView};

use crate::cli::{TaskArgs, TaskCommand};

fn print_table(tasks: &[TaskView]) {
    println!("{:<14} {:<13} {:<6} {:<7} {:<24} REASON", "ID", "STATE", "AGE", "ATTEMPT", "NAME");
    for t in tasks {
        let name: String = esc(&t.name).chars().take(24).collect();
        println!(
            "{:<14} {:<13} {:<6} {:<7} {:<24} {}",
            t.id,
            t.state,
            age(t.created_at),
            t.attempt,
            name,
            esc(&t.reason)
        );
    }
}

/// Exit status of `submit --wait`: 0 only for a completed task.
fn final_status(t: &TaskView) -> i32 {
    if t.state == agentbox_core::TaskState::Completed {
        0
    } else {
        1
    }
}

/// Waits until the task has ended.
pub fn wait_final(c: &dyn Control, id: &str) -> Result<TaskView> {
    loop {
        let t = c.task_view(id)?;
        if t.state.is_final() {
            return Ok(t);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The manifest as written, from a file or stdin (`-`): validated where the task runs, after a
/// local check so that mistakes are named here.
fn manifest_text(file: &Path) -> Result<(String, ManifestFormat)> {
    let (text, format) = if file == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading the manifest from stdin")?;
        (s, ManifestFormat::Yaml)
    } else {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        (text, ManifestFormat::of_path(file))
    };
    tasks::parse_manifest(&text, format).with_context(|| file.display().to_string())?;
    Ok((text, format))
}

pub fn task(c: &dyn Control, args: TaskArgs) -> Result<i32> {
    match args.command {
        TaskCommand::Submit { file, wait, json } => {
            let (text, format) = manifest_text(&file)?;
            let t = c.submit_task(&text, format)?;
            if json && !wait {
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                println!("{}", t.id);
            }
            if !wait {
                return Ok(0);
            }
            let t = wait_final(c, &t.id)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                eprintln!("task {} {}", t.id, esc(&t.describe()));
            }
            Ok(final_status(&t))
        }
        TaskCommand::List { json } => {
            let all = c.tasks()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                print_table(&all);
            }
            Ok(0)
        }
        TaskCommand::Show { id, json } => {
            let d = c.task(&id)?;
            if json {
                let v = serde_json::json!({"task": d.task, "events": d.events, "artifacts": d.artifacts});
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(0);
            }
            let t = &d.task;
            println!("id:        {}", t.id);
            println!("name:      {}", esc(&t.name));
            println!("state:     {}", esc(&t.describe()));
            println!("agent:     {} (attempt {})", t.agent.as_deref().unwrap_or("-"), t.attempt);
            println!("timeout:   {}   retries: {}", t.timeout_text(), t.retries);
            println!("input:     {}", t.input_dir);
            println!("output:    {}", t.output_dir);
            println!("workspace: {}", t.workspace);
            if !t.state.is_final() {
                match d.runner {
                    Some(pid) => println!("runner:    pid {pid}"),
                    None => println!(
                        "runner:    not running (starts with the next submit, cancel or `agentbox serve`)"
                    ),
                }
            }
            println!("events:");
            for e in &d.events {
                println!("  {:>6} ago  {:<24} {}", age(e.at), e.event, esc(&e.detail));
            }
            Ok(0)
        }
        TaskCommand::Logs { id, follow } => logs(c, &id, follow),
        TaskCommand::Cancel { id } => {
            let t = c.cancel_task(&id)?;
            let t = if t.state.is_final() { t } else { wait_final(c, &t.id)? };
            println!("task {} {}", t.id, esc(&t.describe()));
            Ok(0)
        }
        TaskCommand::Artifacts { id, download, json } => {
            let list = match &download {
                Some(dest) => c.download_artifacts(&id, dest)?,
                None => c.task(&id)?.artifacts,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for a in &list {
                    println!("{:>10}  {}", a.size, esc(&a.path));
                }
                if let Some(dest) = download {
                    eprintln!("{} file(s) copied into {}", list.len(), dest.display());
                }
            }
            Ok(0)
        }
    }
}

/// Prints the current attempt's log; with `follow`, keeps printing (across retries) until the
/// task ends.
fn logs(c: &dyn Control, id: &str, follow: bool) -> Result<i32> {
    let mut out = std::io::stdout().lock();
    let (mut attempt, mut printed) = (None, 0);
    loop {
        let t = c.task_view(id)?;
        let text = c.task_log(id)?;
        // A retry starts a new log: print it from its start.
        if attempt != Some(t.attempt) || text.len() < printed {
            attempt = Some(t.attempt);
            printed = 0;
        }
        out.write_all(&text.as_bytes()[printed..])?;
        out.flush()?;
        printed = text.len();
        if !follow || t.state.is_final() {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
