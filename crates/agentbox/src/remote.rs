//! `agentbox --server URL VERB ...`: the same verbs, carried out by a server over its API.
//!
//! The server is chosen by `--server`, `--context NAME`, AGENTBOX_SERVER, AGENTBOX_CONTEXT or the
//! current context (`agentbox context use NAME`), in that order. The token comes from
//! AGENTBOX_TOKEN, the context's token file, or AGENTBOX_HOME/api-token (a server on this
//! machine writes it there).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cli::{Cli, Command, ContextArgs, ContextCommand};
use agentbox_engine::views::AgentView;
use agentbox_engine::Home;
use agentbox_server::SpawnRequest;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedContext {
    server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_file: Option<PathBuf>,
}

/// `AGENTBOX_HOME/contexts.toml`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Contexts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    current: Option<String>,
    #[serde(default)]
    contexts: BTreeMap<String, SavedContext>,
}

impl Contexts {
    fn path(home: &Home) -> PathBuf {
        home.root.join("contexts.toml")
    }

    fn load(home: &Home) -> Result<Self> {
        let path = Self::path(home);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                toml::from_str(&text).with_context(|| format!("{}: fix or remove it", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn save(&self, home: &Home) -> Result<()> {
        let path = Self::path(home);
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, toml::to_string(self)?).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }
}

fn check_url(url: &str) -> Result<String> {
    let u = url.trim_end_matches('/');
    if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() <= "https://".len() {
        bail!("invalid server URL '{url}': use http://HOST:PORT or https://HOST:PORT");
    }
    Ok(u.to_string())
}

pub fn context(args: ContextArgs) -> Result<i32> {
    let home = Home::open()?;
    let mut all = Contexts::load(&home)?;
    match args.command {
        ContextCommand::Add { name, url, token_file } => {
            agentbox_core::validate_name(&name)?;
            let server = check_url(&url)?;
            if let Some(f) = &token_file {
                anyhow::ensure!(f.is_file(), "--token-file {}: no such file", f.display());
            }
            all.contexts.insert(name.clone(), SavedContext { server, token_file });
            all.save(&home)?;
            println!("{name}");
        }
        ContextCommand::Use { name } => {
            if name == "none" {
                all.current = None;
            } else if all.contexts.contains_key(&name) {
                all.current = Some(name);
            } else {
                bail!("no context named '{name}' (see `agentbox context list`)");
            }
            all.save(&home)?;
        }
        ContextCommand::List => {
            for (name, c) in &all.contexts {
                let mark = if all.current.as_deref() == Some(name) { "*" } else { " " };
                println!("{mark} {name:<20} {}", c.server);
            }
        }
        ContextCommand::Rm { name } => {
            if all.contexts.remove(&name).is_none() {
                bail!("no context named '{name}'");
            }
            if all.current.as_deref() == Some(name.as_str()) {
                all.current = None;
            }
            all.save(&home)?;
        }
    }
    Ok(0)
}

/// A server to talk to.
#[derive(Debug)]
pub struct Remote {
    base: String,
    token: String,
    http: ureq::Agent,
}

/// The server the command line selects, if any.
pub fn selected(cli: &Cli) -> Result<Option<Remote>> {
    let home = Home::open()?;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (server, token_file) = if let Some(url) = cli.server.clone().or_else(|| env("AGENTBOX_SERVER")) {
        (url, None)
    } else {
        let all = Contexts::load(&home)?;
        let Some(name) = cli.context.clone().or_else(|| env("AGENTBOX_CONTEXT")).or(all.current.clone())
        else {
            return Ok(None);
        };
        match all.contexts.get(&name) {
            Some(c) => (c.server.clone(), c.token_file.clone()),
            None => bail!("no context named '{name}' (see `agentbox context list`)"),
        }
    };
    let token = match env("AGENTBOX_TOKEN") {
        Some(t) => t,
        None => {
            let file = token_file.unwrap_or_else(|| agentbox_server::token_path(&home));
            std::fs::read_to_string(&file)
                .with_context(|| {
                    format!("reading the token from {} (or set AGENTBOX_TOKEN)", file.display())
                })?
                .trim()
                .to_string()
        }
    };
    let http = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .build()
        .into();
    Ok(Some(Remote { base: check_url(&server)?, token, http }))
}

impl Remote {
    /// The raw bytes of a GET (artifact downloads).
    pub fn download(&self, path: &str) -> Result<Vec<u8>> {
        let url = format!("{}{path}", self.base);
        let mut resp = self
            .http
            .get(&url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .call()
            .with_context(|| format!("reaching {}", self.base))?;
        if !resp.status().is_success() {
            bail!("GET {path}: {}", resp.status());
        }
        Ok(resp.body_mut().with_config().limit(1 << 30).read_to_vec()?)
    }

    pub fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let resp = match (method, body) {
            ("GET", _) => self.http.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => self.http.delete(&url).header("Authorization", &auth).call(),
            (_, b) => {
                let r = match method {
                    "PUT" => self.http.put(&url),
                    _ => self.http.post(&url),
                }
                .header("Authorization", &auth);
                match b {
                    Some(b) => r.send_json(b),
                    None => r.send_empty(),
                }
            }
        };
        let mut resp = resp.with_context(|| format!("reaching {}", self.base))?;
        let status = resp.status();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let msg = value["error"].as_str().map(str::to_string).unwrap_or_else(|| value.to_string());
            bail!("{msg} (server: {status})");
        }
        Ok(value)
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        self.send("GET", path, None)
    }

    pub fn post(&self, path: &str, body: Option<&Value>) -> Result<Value> {
        self.send("POST", path, body)
    }
}

fn unsupported(verb: &str) -> Result<i32> {
    bail!("`{verb}` is not available with --server; run it on the server's machine")
}

fn os_strings(v: &[std::ffi::OsString]) -> Vec<String> {
    v.iter().map(|a| a.to_string_lossy().into_owned()).collect()
}

/// Carries out one command on the server.
pub fn run(remote: &Remote, command: Command) -> Result<i32> {
    match command {
        Command::List(a) => {
            let mut q = Vec::new();
            if let Some(s) = &a.status {
                q.push(format!("status={s}"));
            }
            if !a.tags.is_empty() {
                let tags: Vec<String> = a.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                q.push(format!("tag={}", tags.join(",")));
            }
            let path = format!("/api/v1/agents{}{}", if q.is_empty() { "" } else { "?" }, q.join("&"));
            let agents: Vec<AgentView> = serde_json::from_value(remote.get(&path)?)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&agents)?);
            } else if a.quiet {
                agents.iter().for_each(|x| println!("{}", x.name));
            } else {
                println!("{:<20} {:<12} {:<8} COMMAND", "NAME", "STATE", "NETWORK");
                for x in &agents {
                    let state = x.describe_state();
                    println!("{:<20} {:<12} {:<8} {}", x.name, state, x.network, x.command.join(" "));
                }
            }
        }
        Command::Info(a) => {
            let v = remote.get(&format!("/api/v1/agents/{}", a.name))?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Command::Spawn(a) => {
            let o = a.opts;
            let s = o.sandbox;
            let prompt = match &o.prompt {
                Some(p) => {
                    Some(std::fs::read_to_string(p).with_context(|| format!("--prompt {}", p.display()))?)
                }
                None => None,
            };
            let mut env = Vec::new();
            for e in &s.env {
                match e {
                    agentbox_core::EnvArg::Set(k, v) => env.push(format!("{k}={v}")),
                    agentbox_core::EnvArg::Inherit(k) => match std::env::var(k) {
                        Ok(v) => env.push(format!("{k}={v}")),
                        Err(_) => bail!("--env {k}: not set here"),
                    },
                }
            }
            let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
            let req = SpawnRequest {
                name: a.name.clone(),
                profile: o.profile.clone(),
                command: os_strings(&o.command),
                prompt,
                tags: o.tags.iter().cloned().collect(),
                workspace: path(&o.mount),
                from_dir: path(&o.from_dir),
                from_git: o.from_git.clone(),
                git_ref: o.git_ref.clone(),
                network: s.network.map(|n| n.to_string()),
                allow: s.allow.iter().map(|r| r.to_string()).collect(),
                secrets: s
                    .secrets
                    .iter()
                    .map(|(n, h)| match h {
                        Some(h) => {
                            format!("{n}={}", h.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(","))
                        }
                        None => n.clone(),
                    })
                    .collect(),
                ask: s.ask,
                env,
                memory: s.memory.map(|m| m.to_string()),
                pids: s.pids,
                cpus: s.cpus,
                backend: s.backend.map(|b| b.to_string()),
                identity: o.identity,
                volumes: o
                    .volumes
                    .iter()
                    .map(|m| {
                        let target =
                            m.target.as_ref().map(|t| format!(":{}", t.display())).unwrap_or_default();
                        let mode = if m.writable { "" } else { ":ro" };
                        format!("{}{target}{mode}", m.source.display())
                    })
                    .collect(),
                workdir: path(&o.workdir),
                restart: o.restart.map(|r| r.to_string()),
            };
            let v = remote.post("/api/v1/agents", Some(&serde_json::to_value(&req)?))?;
            println!("{}", v["name"].as_str().unwrap_or(&a.name));
        }
        Command::Kill(a) => {
            remote.post(&format!("/api/v1/agents/{}/kill", a.name), None)?;
            println!("{}", a.name);
        }
        Command::Restart(a) => {
            remote.post(&format!("/api/v1/agents/{}/restart", a.name), None)?;
            println!("{}", a.name);
        }
        Command::Rm(a) => {
            for name in &a.names {
                remote.send("DELETE", &format!("/api/v1/agents/{name}?force={}", a.force), None)?;
                println!("{name}");
            }
        }
        Command::Screen(a) => {
            let v = remote.get(&format!("/api/v1/agents/{}/screen?ansi={}", a.name, a.ansi))?;
            crate::cmd_session::print_screen(
                &a,
                str_of(&v["name"]),
                str_of(&v["state"]),
                str_of(&v["screen"]),
            );
        }
        Command::Send(a) => {
            let text = match &a.file {
                Some(f) => std::fs::read_to_string(f).with_context(|| format!("--file {}", f.display()))?,
                None if a.text.is_empty() => bail!("nothing to send: give TEXT or --file FILE"),
                None => a.text.join(" "),
            };
            let body = serde_json::json!({ "text": text, "enter": !a.no_enter });
            remote.post(&format!("/api/v1/agents/{}/input", a.name), Some(&body))?;
        }
        Command::Logs(a) => logs(remote, &a)?,
        Command::History(a) => {
            let q = a.event.as_deref().map(|e| format!("&event={e}")).unwrap_or_default();
            let v = remote.get(&format!("/api/v1/events?limit={}{q}", a.lines))?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for e in v.as_array().into_iter().flatten() {
                    let at = agentbox_proxy::format_utc(e["at"].as_u64().unwrap_or(0));
                    println!(
                        "{at}  {:<14} {:<20} {}",
                        str_of(&e["event"]),
                        str_of(&e["agent"]),
                        agentbox_core::termfilter::escape_for_terminal(str_of(&e["detail"]))
                    );
                }
            }
        }
        Command::Net(a) => {
            let v = remote.get(&format!("/api/v1/agents/{}/net", a.name))?;
            for r in v.as_array().into_iter().flatten() {
                println!("{}", serde_json::to_string(r)?);
            }
        }
        Command::Allow(a) => {
            let body = serde_json::json!({ "host": a.host.to_string(), "once": a.once, "always": a.always });
            remote.post(&format!("/api/v1/agents/{}/allow", a.name), Some(&body))?;
        }
        Command::Attach(a) => return attach(remote, &a),
        Command::Task(a) => return crate::remote_tasks::task(remote, a),
        Command::Hitl(a) => return crate::remote_tasks::hitl(remote, a),
        other => {
            let verb = format!("{other:?}");
            return unsupported(&verb.split(['(', ' ', '{']).next().unwrap_or("this").to_lowercase());
        }
    }
    Ok(0)
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn logs(remote: &Remote, a: &crate::cli::LogsArgs) -> Result<()> {
    let raw = a.raw;
    let first = remote.get(&format!("/api/v1/agents/{}/logs?offset=0&raw={raw}", a.name))?;
    let mut out = std::io::stdout().lock();
    let data = str_of(&first["data"]).as_bytes();
    out.write_all(match a.lines {
        Some(n) => agentbox_engine::logs::tail_lines(data, n),
        None => data,
    })?;
    out.flush()?;
    if !a.follow {
        return Ok(());
    }
    // Follow: the server's event stream from where the first read ended.
    let offset = first["next_offset"].as_u64().unwrap_or(0);
    let url = format!("{}/api/v1/agents/{}/logs?offset={offset}&raw={raw}", remote.base, a.name);
    let resp = remote
        .http
        .get(&url)
        .header("Authorization", &format!("Bearer {}", remote.token))
        .header("Accept", "text/event-stream")
        .call()?;
    let reader = std::io::BufReader::new(resp.into_body().into_reader());
    let mut event = String::new();
    for line in std::io::BufRead::lines(reader) {
        let line = line?;
        if let Some(e) = line.strip_prefix("event: ") {
            event = e.to_string();
        } else if let Some(d) = line.strip_prefix("data: ") {
            match event.as_str() {
                "log" => {
                    let v: Value = serde_json::from_str(d)?;
                    out.write_all(str_of(&v["data"]).as_bytes())?;
                    out.flush()?;
                }
                "end" => break,
                "error" => bail!("{d}"),
                _ => {}
            }
        }
    }
    Ok(())
}

/// `attach` over the server's WebSocket: raw terminal, detach key, resize on start.
fn attach(remote: &Remote, a: &crate::cli::AttachArgs) -> Result<i32> {
    use std::io::IsTerminal;
    use tungstenite::Message;
    let Some(hostport) = remote.base.strip_prefix("http://") else {
        bail!("attach over --server needs an http:// server for now; attach on the server's machine");
    };
    let detach_key = crate::cmd_session::detach_key(a)?;
    let role = if a.read_only { "observer" } else { "controller" };
    let url = format!("ws://{hostport}/ws/agents/{}/attach?role={role}", a.name);
    let mut req = tungstenite::client::IntoClientRequest::into_client_request(url.as_str())?;
    req.headers_mut().insert("Authorization", format!("Bearer {}", remote.token).parse()?);
    let stream =
        std::net::TcpStream::connect(hostport).with_context(|| format!("connecting to {hostport}"))?;
    let (mut ws, _) = tungstenite::client(req, stream).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r)) => {
            let body = r.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            let msg = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string));
            anyhow::anyhow!("{} (server: {})", msg.unwrap_or(body), r.status())
        }
        other => anyhow::anyhow!("attaching: {other}"),
    })?;
    ws.get_mut().set_read_timeout(Some(Duration::from_millis(20)))?;
    let stdin = std::io::stdin();
    let raw = agentbox_sys::RawTerminal::enter(stdin.as_fd());
    let mut stdout = agentbox_sys::SandboxOutput::new(std::io::stdout(), std::io::stdout().is_terminal());
    if let (false, Ok(size)) = (a.read_only, agentbox_sys::get_winsize(std::io::stdout().as_fd())) {
        let msg = serde_json::json!({"type": "resize", "rows": size.rows, "cols": size.cols}).to_string();
        let _ = ws.send(Message::Text(msg.into()));
    }
    let mut buf = [0u8; 16384];
    let end = loop {
        match ws.read() {
            Ok(Message::Binary(b)) => stdout.write(&b)?,
            Ok(Message::Text(t)) => {
                if let Ok(v) = serde_json::from_str::<Value>(&t) {
                    if v["type"] == "exit" {
                        break Some(v["code"].as_i64().unwrap_or(0) as i32);
                    }
                }
            }
            Ok(Message::Close(_)) => break Some(0),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => bail!("the connection to the server ended: {e}"),
        }
        let mut fds = [nix::poll::PollFd::new(stdin.as_fd(), nix::poll::PollFlags::POLLIN)];
        if nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap_or(0) > 0 {
            let n = stdin.lock().read(&mut buf).unwrap_or(0);
            let input = &buf[..n];
            let (before, detach) = match input.iter().position(|b| *b == detach_key) {
                Some(i) => (&input[..i], true),
                None => (input, n == 0),
            };
            if !before.is_empty() && !a.read_only {
                ws.send(Message::Binary(before.to_vec().into()))?;
            }
            if detach {
                break None;
            }
        }
    };
    drop(stdout);
    drop(raw);
    let _ = ws.close(None);
    match end {
        None => {
            println!("\r\n[detached from {}]", a.name);
            Ok(0)
        }
        Some(code) => {
            println!("\r\n[{} exited with status {code}]", a.name);
            Ok(code)
        }
    }
}
