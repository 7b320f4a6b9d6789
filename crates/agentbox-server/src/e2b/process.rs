//! envd's `process.Process` service: commands started in a sandbox through `agentbox exec`,
//! their output streamed as Connect events (`start`, `data`, `end`), reachable again by pid
//! (`Connect`), fed (`SendInput`, `StreamInput`, `CloseStdin`) and signalled (`SendSignal`).
//!
//! A process outlives the stream that started it (the SDK's `disconnect` leaves it running).
//! Each keeps its events (the last few MiB of output) so that a `Connect` replays what it
//! missed, and is forgotten a minute after it ends.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::{ChildStdin, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::connect::{self, Stream};
use super::error::RpcError;
use super::helper::{self, Exec};
use super::sandboxes::{Current, USER_HOME};
use crate::state::Shared;

/// Output kept for a later `Connect`, per process.
const HISTORY_BYTES: usize = 4 << 20;
/// A quiet stream gets a keepalive this often (the SDK asks for one at least every 50 s).
const KEEPALIVE: Duration = Duration::from_secs(30);
/// How long an ended process stays reachable.
const LINGER: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct Log {
    events: Vec<Value>,
    bytes: usize,
    ended: bool,
}

#[derive(Debug)]
struct Proc {
    sandbox: String,
    pid: u32,
    tag: Option<String>,
    config: Value,
    stdin: Mutex<Option<ChildStdin>>,
    /// The server's end of the process's terminal, if it has one.
    terminal: Option<std::fs::File>,
    /// Reaped: its pid may belong to another process now, and is never signalled again.
    reaped: std::sync::atomic::AtomicBool,
    /// A descriptor of the helper process, opened while it could not have been reaped: a signal
    /// through it never reaches a process that reused the pid.
    pidfd: Option<agentbox_sys::PidFd>,
    log: Mutex<Log>,
    tx: broadcast::Sender<Value>,
}

impl Proc {
    fn push(&self, event: Value) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let size = event.to_string().len();
        log.bytes += size;
        log.events.push(event.clone());
        while log.bytes > HISTORY_BYTES && log.events.len() > 1 {
            let first = log.events.remove(0);
            log.bytes = log.bytes.saturating_sub(first.to_string().len());
        }
        if event["event"].get("end").is_some() {
            log.ended = true;
        }
        let _ = self.tx.send(event);
    }
}

/// What envd keeps between calls: the processes it started, by pid, and the directory watchers
/// of `files.watch_dir`, by id.
#[derive(Debug, Default)]
pub struct Processes {
    by_pid: Mutex<HashMap<u32, Arc<Proc>>>,
    pub(super) watchers: Mutex<HashMap<String, super::fs::Watcher>>,
}

impl Processes {
    /// Forgets what a removed sandbox left: its directory watchers.
    pub fn forget_sandbox(&self, sandbox: &str) {
        self.watchers.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, w| w.sandbox() != sandbox);
    }

    fn get(&self, sandbox: &str, selector: &Value) -> Result<Arc<Proc>, RpcError> {
        let all = self.by_pid.lock().unwrap_or_else(|p| p.into_inner());
        let found = match (
            selector.get("pid").and_then(Value::as_u64),
            selector.get("tag").and_then(Value::as_str),
        ) {
            (Some(pid), _) => all.get(&(pid as u32)).cloned(),
            (None, Some(tag)) => all.values().find(|p| p.tag.as_deref() == Some(tag)).cloned(),
            (None, None) => return Err(RpcError::new("invalid_argument", "process: give its pid or tag")),
        };
        found
            .filter(|p| p.sandbox == sandbox)
            .ok_or_else(|| RpcError::new("not_found", format!("process {selector} not found")))
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(s: &str) -> Result<Vec<u8>, RpcError> {
    let e = base64::engine::general_purpose::STANDARD;
    e.decode(s)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(s))
        .map_err(|_| RpcError::new("invalid_argument", "input: not base64"))
}

/// Starts `msg`'s process in the sandbox and registers it.
fn start(state: &Shared, current: &Current, msg: &Value) -> Result<Arc<Proc>, RpcError> {
    let p = &msg["process"];
    let Some(cmd) = p.get("cmd").and_then(Value::as_str) else {
        return Err(RpcError::new("invalid_argument", "process.cmd: what to run?"));
    };
    let pty_size = match msg.get("pty").filter(|v| !v.is_null()) {
        Some(p) => Some(size_of(p)?),
        None => None,
    };
    let mut argv: Vec<std::ffi::OsString> = vec![cmd.into()];
    for a in p.get("args").and_then(Value::as_array).into_iter().flatten() {
        argv.push(
            a.as_str().ok_or_else(|| RpcError::new("invalid_argument", "process.args: strings"))?.into(),
        );
    }
    let mut env: Vec<(String, String)> =
        current.sandbox.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    env.push(("HOME".into(), USER_HOME.into()));
    for (k, v) in p.get("envs").and_then(Value::as_object).into_iter().flatten() {
        let v = v.as_str().ok_or_else(|| RpcError::new("invalid_argument", "process.envs: string values"))?;
        env.push((k.clone(), v.to_string()));
    }
    let cwd = match p.get("cwd").and_then(Value::as_str) {
        Some(c) => Some(helper::absolute(c)?),
        None => None,
    };
    let keep_stdin = msg.get("stdin").and_then(Value::as_bool).unwrap_or(false);
    let e = Exec { argv, env, cwd, stdin: keep_stdin, tty: pty_size.is_some() };
    let mut command = helper::command(&state.home, &current.id, &e);
    // A terminal: the helper gets the pair's far end as its stdio and controlling terminal (so a
    // resize reaches it as SIGWINCH); the server keeps the near end.
    let terminal = match pty_size {
        Some(size) => {
            let ws = nix::pty::Winsize { ws_row: size.rows, ws_col: size.cols, ws_xpixel: 0, ws_ypixel: 0 };
            let pair = nix::pty::openpty(Some(&ws), None)
                .map_err(|err| RpcError::new("internal", format!("a terminal for {cmd}: {err}")))?;
            let far = |fd: &std::os::fd::OwnedFd| {
                fd.try_clone().map(Stdio::from).map_err(|err| RpcError::new("internal", err.to_string()))
            };
            command.stdin(far(&pair.slave)?).stdout(far(&pair.slave)?).stderr(far(&pair.slave)?);
            agentbox_sys::new_session_on_spawn(&mut command, true);
            Some(pair.master)
        }
        None => {
            command
                .stdin(if keep_stdin { Stdio::piped() } else { Stdio::null() })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            None
        }
    };
    let mut child =
        command.spawn().map_err(|err| RpcError::new("internal", format!("starting {cmd}: {err}")))?;
    // The far end is the helper's alone now: its exit closes the terminal (EIO on our end).
    drop(command);
    let pid = child.id();
    let terminal = terminal.map(std::fs::File::from);
    let (tx, _) = broadcast::channel(4096);
    let proc = Arc::new(Proc {
        sandbox: current.id.clone(),
        pid,
        tag: msg.get("tag").and_then(Value::as_str).map(str::to_string),
        config: p.clone(),
        stdin: Mutex::new(child.stdin.take()),
        terminal: match &terminal {
            Some(t) => Some(t.try_clone().map_err(|err| RpcError::new("internal", err.to_string()))?),
            None => None,
        },
        log: Mutex::new(Log::default()),
        reaped: std::sync::atomic::AtomicBool::new(false),
        pidfd: agentbox_sys::PidFd::open(pid as i32).ok(),
        tx,
    });
    state.e2b.by_pid.lock().unwrap_or_else(|p| p.into_inner()).insert(pid, proc.clone());
    let readers: Vec<_> = [
        ("stdout", child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>)),
        ("stderr", child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>)),
        ("pty", terminal.map(|t| Box::new(t) as Box<dyn Read + Send>)),
    ]
    .into_iter()
    .filter_map(|(name, r)| r.map(|r| (name, r)))
    .map(|(name, mut r)| {
        let proc = proc.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 32 << 10];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                proc.push(json!({ "event": { "data": { name: b64(&buf[..n]) } } }));
            }
        })
    })
    .collect();
    let waiter = proc.clone();
    let table = state.e2b.clone();
    std::thread::spawn(move || {
        let status = child.wait();
        waiter.reaped.store(true, std::sync::atomic::Ordering::SeqCst);
        for r in readers {
            let _ = r.join();
        }
        use std::os::unix::process::ExitStatusExt;
        let end = match status {
            Ok(s) => match (s.code(), s.signal()) {
                (Some(code), _) => {
                    json!({ "exitCode": code, "exited": true, "status": format!("exit status {code}") })
                }
                (None, Some(sig)) => {
                    json!({ "exitCode": -1, "exited": false, "status": format!("signal: {}", signal_name(sig)) })
                }
                _ => json!({ "exitCode": -1, "exited": false, "status": "ended" }),
            },
            Err(e) => json!({ "exitCode": -1, "exited": false, "status": "unknown", "error": e.to_string() }),
        };
        waiter.stdin.lock().unwrap_or_else(|p| p.into_inner()).take();
        waiter.push(json!({ "event": { "end": end } }));
        std::thread::sleep(LINGER);
        let mut all = table.by_pid.lock().unwrap_or_else(|p| p.into_inner());
        // Only this process's entry: a newer one may have its pid by now.
        if all.get(&waiter.pid).is_some_and(|p| Arc::ptr_eq(p, &waiter)) {
            all.remove(&waiter.pid);
        }
    });
    Ok(proc)
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        9 => "killed",
        15 => "terminated",
        2 => "interrupt",
        1 => "hangup",
        _ => "signalled",
    }
}

/// Streams a process's events: `start`, what it printed so far, then live until its `end`.
async fn follow(proc: Arc<Proc>, stream: Stream) {
    if !stream.send(&json!({ "event": { "start": { "pid": proc.pid } } })).await {
        return;
    }
    let (history, mut rx, ended) = {
        let log = proc.log.lock().unwrap_or_else(|p| p.into_inner());
        (log.events.clone(), proc.tx.subscribe(), log.ended)
    };
    for e in &history {
        if !stream.send(e).await {
            return;
        }
    }
    if ended {
        stream.end(None).await;
        return;
    }
    loop {
        match tokio::time::timeout(KEEPALIVE, rx.recv()).await {
            Ok(Ok(e)) => {
                if !stream.send(&e).await {
                    return;
                }
                if e["event"].get("end").is_some() {
                    stream.end(None).await;
                    return;
                }
            }
            Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                crate::extract::warn(&format!(
                    "a client reading process {} fell {n} events behind",
                    proc.pid
                ));
            }
            Ok(Err(broadcast::error::RecvError::Closed)) => {
                stream.end(None).await;
                return;
            }
            Err(_) => {
                if !stream.send(&json!({ "event": { "keepalive": {} } })).await {
                    return;
                }
            }
        }
    }
}

/// A terminal size in a request (`{size: {rows, cols}}`).
fn size_of(pty: &Value) -> Result<agentbox_sys::WinSize, RpcError> {
    let n = |k: &str| pty["size"].get(k).and_then(Value::as_u64).filter(|n| (1..=1000).contains(n));
    match (n("rows"), n("cols")) {
        (Some(rows), Some(cols)) => Ok(agentbox_sys::WinSize { rows: rows as u16, cols: cols as u16 }),
        _ => Err(RpcError::new("invalid_argument", "pty.size: rows and cols from 1 to 1000")),
    }
}

fn write_input(proc: &Proc, input: &Value) -> Result<(), RpcError> {
    let data = match (input.get("stdin").and_then(Value::as_str), input.get("pty").and_then(Value::as_str)) {
        (Some(s), _) => unb64(s)?,
        (None, Some(s)) => {
            let Some(mut t) = proc.terminal.as_ref() else {
                return Err(RpcError::new("invalid_argument", "this process has no terminal"));
            };
            return t
                .write_all(&unb64(s)?)
                .map_err(|e| RpcError::new("failed_precondition", format!("the terminal: {e}")));
        }
        (None, None) => return Ok(()),
    };
    let mut stdin = proc.stdin.lock().unwrap_or_else(|p| p.into_inner());
    let Some(pipe) = stdin.as_mut() else {
        return Err(RpcError::new(
            "failed_precondition",
            "the process's stdin is closed (start it with stdin)",
        ));
    };
    pipe.write_all(&data)
        .and_then(|()| pipe.flush())
        .map_err(|e| RpcError::new("failed_precondition", format!("stdin: {e}")))
}

fn unary_call(state: &Shared, current: &Current, method: &str, msg: &Value) -> Result<Value, RpcError> {
    let table = &state.e2b;
    match method {
        "List" => {
            let all = table.by_pid.lock().unwrap_or_else(|p| p.into_inner());
            let procs: Vec<Value> = all
                .values()
                .filter(|p| p.sandbox == current.id && !p.log.lock().unwrap_or_else(|e| e.into_inner()).ended)
                .map(|p| {
                    let mut v = json!({ "config": p.config, "pid": p.pid });
                    if let Some(t) = &p.tag {
                        v["tag"] = json!(t);
                    }
                    v
                })
                .collect();
            Ok(json!({ "processes": procs }))
        }
        "SendInput" => {
            let proc = table.get(&current.id, &msg["process"])?;
            write_input(&proc, &msg["input"])?;
            Ok(json!({}))
        }
        "CloseStdin" => {
            let proc = table.get(&current.id, &msg["process"])?;
            proc.stdin.lock().unwrap_or_else(|p| p.into_inner()).take();
            Ok(json!({}))
        }
        "SendSignal" => {
            let proc = table.get(&current.id, &msg["process"])?;
            let sig = match &msg["signal"] {
                Value::String(s) if s == "SIGNAL_SIGKILL" => nix::sys::signal::Signal::SIGKILL,
                Value::String(s) if s == "SIGNAL_SIGTERM" => nix::sys::signal::Signal::SIGTERM,
                Value::Number(n) if n.as_u64() == Some(9) => nix::sys::signal::Signal::SIGKILL,
                Value::Number(n) if n.as_u64() == Some(15) => nix::sys::signal::Signal::SIGTERM,
                other => {
                    return Err(RpcError::new(
                        "invalid_argument",
                        format!("signal {other}: use SIGNAL_SIGKILL or SIGNAL_SIGTERM"),
                    ))
                }
            };
            let gone = || RpcError::new("not_found", format!("process {} has ended", proc.pid));
            if proc.reaped.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(gone());
            }
            // The helper's death takes the command with it (its parent-death signal is SIGKILL);
            // SIGTERM it passes on. Through the pidfd: never a process that reused the pid.
            let Some(pidfd) = &proc.pidfd else { return Err(gone()) };
            pidfd.signal(sig).map_err(|_| gone())?;
            Ok(json!({}))
        }
        "Update" => {
            let proc = table.get(&current.id, &msg["process"])?;
            let Some(t) = &proc.terminal else {
                return Err(RpcError::new("invalid_argument", "this process has no terminal to resize"));
            };
            let size = size_of(&msg["pty"])?;
            agentbox_sys::set_winsize(std::os::fd::AsFd::as_fd(t), size)
                .map_err(|e| RpcError::new("internal", format!("resizing the terminal: {e}")))?;
            Ok(json!({}))
        }
        other => Err(RpcError::new("unimplemented", format!("process.Process/{other} is not a method"))),
    }
}

/// `POST /process.Process/{method}`.
pub async fn rpc(
    State(state): State<Shared>,
    Path(method): Path<String>,
    Extension(current): Extension<Current>,
    body: axum::body::Bytes,
) -> Response {
    match method.as_str() {
        "Start" | "Connect" => {
            let msg = match connect::first_message(&body) {
                Ok(m) => m,
                Err(e) => return connect::failed_stream(e),
            };
            let proc = if method == "Start" {
                let (s, c) = (state.clone(), current.clone());
                match tokio::task::spawn_blocking(move || start(&s, &c, &msg)).await {
                    Ok(Ok(p)) => p,
                    Ok(Err(e)) => return connect::failed_stream(e),
                    Err(e) => return connect::failed_stream(e.into()),
                }
            } else {
                match state.e2b.get(&current.id, &msg["process"]) {
                    Ok(p) => p,
                    Err(e) => return connect::failed_stream(e),
                }
            };
            let (stream, response) = connect::stream();
            tokio::spawn(follow(proc, stream));
            response
        }
        "StreamInput" => {
            let messages = match connect::messages(&body) {
                Ok(m) => m,
                Err(e) => return connect::failed_stream(e),
            };
            let mut proc = None;
            for m in &messages {
                if let Some(start) = m.get("start") {
                    match state.e2b.get(&current.id, &start["process"]) {
                        Ok(p) => proc = Some(p),
                        Err(e) => return connect::failed_stream(e),
                    }
                } else if let Some(data) = m.get("data") {
                    let Some(p) = &proc else {
                        return connect::failed_stream(RpcError::new(
                            "invalid_argument",
                            "data before start",
                        ));
                    };
                    let (p, input) = (p.clone(), data["input"].clone());
                    // May block (a process that does not read): never on a server thread.
                    match tokio::task::spawn_blocking(move || write_input(&p, &input)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return connect::failed_stream(e),
                        Err(e) => return connect::failed_stream(e.into()),
                    }
                }
            }
            let (stream, response) = connect::stream();
            tokio::spawn(async move {
                stream.send(&json!({})).await;
                stream.end(None).await;
            });
            response
        }
        _ => {
            let msg = match connect::unary(&body) {
                Ok(m) => m,
                Err(e) => return e.into_response(),
            };
            // Writing a process's input may block (it does not read): never on a server thread.
            let answer =
                tokio::task::spawn_blocking(move || unary_call(&state, &current, &method, &msg)).await;
            connect::reply(answer.unwrap_or_else(|e| Err(RpcError::from(e))))
        }
    }
}
