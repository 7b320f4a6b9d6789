//! `agentbox task ...`.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use agentbox_core::termfilter::escape_for_terminal as esc;
use agentbox_core::ManifestFormat;
use anyhow::{Context, Result};

use crate::cli::{TaskArgs, TaskCommand};
use agentbox_engine::agents::age;
use agentbox_engine::tasks::{self, artifacts, TaskView};
use agentbox_engine::Home;

/// Reads a manifest file (or stdin for `-`) and validates it.
pub fn read_manifest(file: &Path) -> Result<agentbox_core::TaskManifest> {
    let (text, format) = if file == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading the manifest from stdin")?;
        (s, ManifestFormat::Yaml)
    } else {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        (text, ManifestFormat::of_path(file))
    };
    tasks::parse_manifest(&text, format).with_context(|| file.display().to_string())
}

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

pub fn wait_final(home: &Home, id: &str) -> Result<TaskView> {
    let store = home.store()?;
    loop {
        let t = tasks::get(home, &store, id)?;
        if t.state.is_final() {
            return Ok(t);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn task(args: TaskArgs) -> Result<i32> {
    let home = Home::open()?;
    let store = home.store()?;
    match args.command {
        TaskCommand::Submit { file, wait, json } => {
            let manifest = read_manifest(&file)?;
            let t = tasks::submit(&home, &store, &manifest)?;
            if json && !wait {
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                println!("{}", t.id);
            }
            if !wait {
                return Ok(0);
            }
            let t = wait_final(&home, &t.id)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                eprintln!("task {} {}", t.id, esc(&t.describe()));
            }
            Ok(final_status(&t))
        }
        TaskCommand::List { json } => {
            let all = tasks::list(&home, &store)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                print_table(&all);
            }
            Ok(0)
        }
        TaskCommand::Show { id, json } => {
            let t = tasks::get(&home, &store, &id)?;
            let events = store.events_of(&t.id, 200)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({"task": t, "events": events}))?
                );
                return Ok(0);
            }
            println!("id:        {}", t.id);
            println!("name:      {}", esc(&t.name));
            println!("state:     {}", esc(&t.describe()));
            println!("agent:     {} (attempt {})", t.agent.as_deref().unwrap_or("-"), t.attempt);
            println!("timeout:   {}   retries: {}", t.timeout_text(), t.retries);
            println!("input:     {}", t.input_dir);
            println!("output:    {}", t.output_dir);
            println!("workspace: {}", t.workspace);
            if !t.state.is_final() {
                match tasks::runner::runner_pid(&home) {
                    Some(pid) => println!("runner:    pid {pid}"),
                    None => println!(
                        "runner:    not running (starts with the next submit, cancel or `agentbox serve`)"
                    ),
                }
            }
            println!("events:");
            for e in events {
                println!("  {:>6} ago  {:<24} {}", age(e.at), e.event, esc(&e.detail));
            }
            Ok(0)
        }
        TaskCommand::Logs { id, follow } => logs(&home, &id, follow),
        TaskCommand::Cancel { id } => {
            let t = tasks::cancel(&home, &store, &id)?;
            let t = if t.state.is_final() { t } else { wait_final(&home, &t.id)? };
            println!("task {} {}", t.id, esc(&t.describe()));
            Ok(0)
        }
        TaskCommand::Artifacts { id, download, json } => {
            let t = tasks::get(&home, &store, &id)?;
            let output = Path::new(&t.output_dir);
            let list = match &download {
                Some(dest) => artifacts::download(output, dest)?,
                None => artifacts::list(output)?,
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
fn logs(home: &Home, id: &str, follow: bool) -> Result<i32> {
    let store = home.store()?;
    let mut out = std::io::stdout().lock();
    let mut cursor = tasks::LogCursor::default();
    loop {
        let t = tasks::get(home, &store, id)?;
        let done = t.state.is_final();
        // Everything there is, chunk by chunk, before deciding whether to wait.
        loop {
            let text = cursor.next(home, &store, &t)?;
            if text.is_empty() {
                break;
            }
            out.write_all(text.as_bytes())?;
        }
        out.flush()?;
        if !follow || done {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
