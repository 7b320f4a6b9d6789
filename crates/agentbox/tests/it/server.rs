//! A real `agentbox serve` on a loopback port over a test's AGENTBOX_HOME, and a small client.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::agents::Agents;

pub(crate) struct Server {
    child: Option<Child>,
    pub(crate) url: String,
    pub(crate) token: String,
    pub(crate) viewer: String,
    http: ureq::Agent,
}

impl Server {
    pub(crate) fn start(agents: &Agents) -> Self {
        Self::start_with(agents, &[])
    }

    pub(crate) fn start_with(agents: &Agents, extra: &[&str]) -> Self {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut child = agents.cmd(&args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.starts_with("http"), "serve printed {line:?}");
        let token = std::fs::read_to_string(agents.home.join("api-token")).unwrap().trim().to_string();
        let viewer =
            std::fs::read_to_string(agents.home.join("api-token-viewer")).unwrap().trim().to_string();
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Self { child: Some(child), url: line.trim().to_string(), token, viewer, http }
    }

    /// A client for a server started elsewhere (another thread's).
    pub(crate) fn client_only(url: &str, token: &str) -> Self {
        let http: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        Self { child: None, url: url.to_string(), token: token.to_string(), viewer: String::new(), http }
    }

    pub(crate) fn addr(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }

    /// `agentbox --server URL ARGS` run by `client` (another AGENTBOX_HOME: a machine of its own).
    pub(crate) fn remote(&self, client: &Agents, args: &[&str]) -> std::process::Output {
        let mut all = vec!["--server", self.url.as_str()];
        all.extend_from_slice(args);
        client.cmd(&all).env("AGENTBOX_TOKEN", &self.token).output().unwrap()
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub(crate) fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// A request with `token` (None: no Authorization header); returns the status and the body
    /// (JSON when it parses, else a string).
    pub(crate) fn call_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.url);
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut resp = match method {
            "GET" | "DELETE" => {
                let mut r = if method == "GET" { self.http.get(&url) } else { self.http.delete(&url) };
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call().unwrap()
            }
            _ => {
                let mut r = match method {
                    "POST" => self.http.post(&url),
                    "PUT" => self.http.put(&url),
                    m => panic!("method {m}"),
                };
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                match body {
                    Some(b) => r.content_type("application/json").send(b).unwrap(),
                    None => r.send_empty().unwrap(),
                }
            }
        };
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub(crate) fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        self.call_as(Some(&self.token), method, path, body)
    }

    #[track_caller]
    pub(crate) fn ok(&self, method: &str, path: &str, body: Option<&str>) -> Value {
        let (status, v) = self.call(method, path, body);
        assert!((200..300).contains(&status), "{method} {path}: {status} {v}");
        v
    }

    /// Polls `GET path` until `pred` holds for the JSON.
    #[track_caller]
    pub(crate) fn until(&self, path: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.ok("GET", path, None);
            if pred(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "GET {path} never showed {what}: {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The screen of an agent once it contains `needle`.
    #[track_caller]
    pub(crate) fn screen_until(&self, name: &str, needle: &str) -> String {
        let v = self.until(&format!("/api/v1/agents/{name}/screen"), needle, |v| {
            v["screen"].as_str().is_some_and(|s| s.contains(needle))
        });
        v["screen"].as_str().unwrap().to_string()
    }

    /// A WebSocket attached to an agent.
    pub(crate) fn ws(&self, name: &str, role: Option<&str>, token: &str) -> Result<Ws, tungstenite::Error> {
        let q = role.map(|r| format!("?role={r}")).unwrap_or_default();
        let url = format!("ws://{}/ws/agents/{name}/attach{q}", self.addr());
        let mut req = tungstenite::client::IntoClientRequest::into_client_request(url.as_str())?;
        req.headers_mut().insert("Authorization", format!("Bearer {token}").parse().unwrap());
        let stream = TcpStream::connect(self.addr()).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let (socket, _) = tungstenite::client(req, stream).map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => tungstenite::Error::ConnectionClosed,
        })?;
        Ok(Ws { socket, seen: Vec::new() })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.crash();
    }
}

pub(crate) struct Ws {
    pub(crate) socket: tungstenite::WebSocket<TcpStream>,
    /// Every terminal byte received so far.
    pub(crate) seen: Vec<u8>,
}

impl Ws {
    /// Reads until the terminal output contains `needle`; text (control) messages are returned
    /// in order as they come.
    #[track_caller]
    pub(crate) fn read_until(&mut self, needle: &str) -> Vec<String> {
        let mut texts = Vec::new();
        while !String::from_utf8_lossy(&self.seen).contains(needle) {
            match self.socket.read() {
                Ok(tungstenite::Message::Binary(b)) => self.seen.extend_from_slice(&b),
                Ok(tungstenite::Message::Text(t)) => texts.push(t.to_string()),
                Ok(_) => {}
                Err(e) => panic!(
                    "websocket ended before {needle:?} ({e}); got {:?}",
                    String::from_utf8_lossy(&self.seen)
                ),
            }
        }
        texts
    }

    /// Reads until a text message arrives (or the socket closes: None).
    pub(crate) fn next_text(&mut self) -> Option<String> {
        loop {
            match self.socket.read() {
                Ok(tungstenite::Message::Binary(b)) => self.seen.extend_from_slice(&b),
                Ok(tungstenite::Message::Text(t)) => return Some(t.to_string()),
                Ok(tungstenite::Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    pub(crate) fn type_text(&mut self, text: &str) {
        self.socket.send(tungstenite::Message::Binary(text.as_bytes().to_vec().into())).unwrap();
    }
}
