//! The verbs a server carries out its own way: `attach` over its WebSocket (the person's terminal
//! raw, restored by its guard whatever happens; the agent's output through the terminal filter;
//! the detach key; a resize on start), and `info` (the server's detail of an agent, as JSON).

use std::io::{IsTerminal, Read};
use std::os::fd::AsFd;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use crate::remote::Remote;

/// `attach` over the server's WebSocket: raw terminal, detach key, resize on start.
pub fn attach(remote: &Remote, a: &crate::cli::AttachArgs) -> Result<i32> {
    use tungstenite::Message;
    let Some(hostport) = remote.base.strip_prefix("http://") else {
        bail!("attach over --server needs an http:// server for now; attach on the server's machine");
    };
    let detach_key = crate::cmd_session::detach_key(a)?;
    let role = if a.read_only { "observer" } else { "controller" };
    agentbox_core::validate_name(&a.name)?;
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

/// `info`: the agent as the server details it (view, resolved spec, usage, identity).
pub fn info(remote: &Remote, a: &crate::cli::InfoArgs) -> Result<i32> {
    agentbox_core::validate_name(&a.name)?;
    let v = remote.get(&format!("/api/v1/agents/{}", a.name))?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(0)
}
