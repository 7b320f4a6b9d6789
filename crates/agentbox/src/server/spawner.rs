//! Spawning from the server.
//!
//! Building a sandbox clones processes, which must happen before any thread exists (a clone in a
//! multi-threaded process inherits locks other threads hold). The server is multi-threaded, so it
//! hands each spawn to a fresh `agentbox __spawn` process: single-threaded, the same code path as
//! `agentbox spawn`, its answer one JSON line on stdout.

use std::io::Write;
use std::process::Stdio;

use anyhow::{Context, Result};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::extract::{blocking, ApiError, ApiResult};
use crate::home::Home;
use crate::service::{self, AgentView, SpawnRequest};

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Answer {
    Agent(Box<AgentView>),
    Error { status: u16, message: String },
}

/// The `__spawn` role: one request on stdin, one answer on stdout.
pub fn spawn_role() -> Result<i32> {
    let home = Home::open()?;
    let req: Result<SpawnRequest> =
        serde_json::from_reader(std::io::stdin().lock()).context("reading the spawn request");
    let answer = match req.and_then(|r| service::spawn(&home, &r)) {
        Ok(view) => Answer::Agent(Box::new(view)),
        Err(e) => Answer::Error { status: service::status_of(&e), message: format!("{e:#}") },
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &answer)?;
    out.write_all(b"\n")?;
    Ok(0)
}

fn run_child(home: &Home, req: &SpawnRequest) -> Result<Answer> {
    let mut child = crate::home::self_command()
        .arg("__spawn")
        .env("AGENTBOX_HOME", &home.root)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting agentbox to spawn the agent")?;
    if let Some(mut stdin) = child.stdin.take() {
        serde_json::to_writer(&mut stdin, req)?;
    }
    let out = child.wait_with_output().context("waiting for the spawn")?;
    let text = String::from_utf8_lossy(&out.stdout);
    match serde_json::from_str::<Answer>(text.trim()) {
        Ok(a) => Ok(a),
        Err(_) => anyhow::bail!(
            "the spawn process ended without an answer ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

/// Spawns an agent from a thread of any process: checked here, built by a child process.
pub fn spawn_blocking(home: &Home, req: &SpawnRequest) -> Result<AgentView> {
    req.to_options(home)?;
    match run_child(home, req)? {
        Answer::Agent(v) => Ok(*v),
        Answer::Error { status: 500, message } => anyhow::bail!(message),
        Answer::Error { status, message } => Err(service::refused(status, message)),
    }
}

/// Spawns an agent: checked here first, so bad input never costs a process, then built by a
/// child process.
pub async fn spawn(home: &Home, req: &SpawnRequest) -> ApiResult<AgentView> {
    let (home, req) = (home.clone(), req.clone());
    let answer = blocking(move || {
        req.to_options(&home)?;
        run_child(&home, &req)
    });
    match answer.await? {
        Answer::Agent(v) => Ok(*v),
        Answer::Error { status, message } => Err(ApiError::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message,
        )),
    }
}
