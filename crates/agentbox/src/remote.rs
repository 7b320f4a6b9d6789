//! A server, driven over its API: the same [`Control`] the local engine offers, so every verb
//! renders the same whether the agents are here or there. The server's errors keep their kind
//! (its status code says which).

use std::path::Path;

use agentbox_core::{HostRule, ManifestFormat, SpawnSpec};
use agentbox_engine::control::Control;
use agentbox_engine::tasks::artifacts::Artifact;
use agentbox_engine::tasks::{TaskDetail, TaskView};
use agentbox_engine::views::{AgentView, Filter, HitlView, LogBytes, LogChunk, ScreenView};
use agentbox_engine::workspace::apply::{Applied, ApplyRequest};
use agentbox_engine::workspace::changes::Change;
use agentbox_engine::workspace::checkpoint::Checkpoint;
use agentbox_engine::{Error, Kind, Result};
use agentbox_proxy::AuditRecord;
use agentbox_server::SpawnRequest;
use agentbox_store::Event;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// A server to talk to.
#[derive(Debug)]
pub struct Remote {
    pub base: String,
    pub token: String,
    http: ureq::Agent,
}

/// The kind an HTTP status stands for (the server's own mapping, read back).
fn kind_of(status: u16) -> Kind {
    match status {
        400 | 413 | 415 | 422 => Kind::Invalid,
        404 => Kind::NotFound,
        409 => Kind::Conflict,
        401 | 403 => Kind::Refused,
        _ => Kind::Internal,
    }
}

/// A path segment or query value, percent-encoded.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Remote {
    pub fn new(base: String, token: String, http: ureq::Agent) -> Self {
        Self { base, token, http }
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    fn unreachable(&self, e: ureq::Error) -> Error {
        Error::internal(format!("reaching {}: {e}", self.base))
    }

    /// The raw bytes of a GET (artifact downloads).
    fn download(&self, path: &str) -> Result<Vec<u8>> {
        let url = format!("{}{path}", self.base);
        let mut resp = self
            .http
            .get(&url)
            .header("Authorization", &self.auth())
            .call()
            .map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(self.error_of(status, resp.body_mut().read_to_string().unwrap_or_default()));
        }
        resp.body_mut().with_config().limit(1 << 30).read_to_vec().map_err(|e| self.unreachable(e))
    }

    /// `GET/PUT .../archive` of `path` in agent `name`.
    fn archive_url(&self, name: &str, path: &Path) -> String {
        format!("{}/api/v1/agents/{}/archive?path={}", self.base, enc(name), enc(&path.to_string_lossy()))
    }

    /// The server's error answer (`{"error": ...}`) with its kind.
    fn error_of(&self, status: ureq::http::StatusCode, text: String) -> Error {
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        let msg = value["error"].as_str().map(str::to_string).unwrap_or_else(|| value.to_string());
        Error::new(kind_of(status.as_u16()), format!("{msg} (server: {status})"))
    }

    /// One request; a JSON answer, or the server's error with its kind.
    pub fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let auth = self.auth();
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
        let mut resp = resp.map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        // Answers can be large (a long audit log); a cut one would be misread.
        let text =
            resp.body_mut().with_config().limit(1 << 30).read_to_string().map_err(|e| self.unreachable(e))?;
        if !status.is_success() {
            return Err(self.error_of(status, text));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        self.send("GET", path, None)
    }

    fn typed<T: DeserializeOwned>(&self, method: &str, path: &str, body: Option<&Value>) -> Result<T> {
        let v = self.send(method, path, body)?;
        serde_json::from_value(v).map_err(|e| Error::internal(format!("reading the server's answer: {e}")))
    }
}

impl Control for Remote {
    fn list(&self, filter: &Filter) -> Result<Vec<AgentView>> {
        let mut q = Vec::new();
        if let Some(s) = &filter.status {
            q.push(format!("status={}", enc(s)));
        }
        if !filter.tags.is_empty() {
            let tags: Vec<String> = filter.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            q.push(format!("tag={}", enc(&tags.join(","))));
        }
        let query = if q.is_empty() { String::new() } else { format!("?{}", q.join("&")) };
        self.typed("GET", &format!("/api/v1/agents{query}"), None)
    }

    fn get(&self, name: &str) -> Result<AgentView> {
        // The detail is the view with more fields beside it.
        self.typed("GET", &format!("/api/v1/agents/{}", enc(name)), None)
    }

    fn spawn(&self, spec: &SpawnSpec) -> Result<AgentView> {
        let mut spec = spec.clone();
        // `--env KEY` passes this machine's value, as it does locally.
        for e in &mut spec.env {
            if let agentbox_core::EnvArg::Inherit(k) = e {
                match std::env::var(k.as_str()) {
                    Ok(v) => *e = agentbox_core::EnvArg::Set(k.clone(), v),
                    Err(_) => {
                        return Err(Error::invalid(format!("'{k}' is not set here"))
                            .for_field(agentbox_core::Field::Env))
                    }
                }
            }
        }
        let body = serde_json::to_value(SpawnRequest::from_spec(&spec)?)?;
        self.typed("POST", "/api/v1/agents", Some(&body))
    }

    fn kill(&self, name: &str) -> Result<AgentView> {
        self.typed("POST", &format!("/api/v1/agents/{}/kill", enc(name)), None)
    }

    fn stop(&self, name: &str, grace: std::time::Duration) -> Result<AgentView> {
        let v: AgentView = self.typed(
            "POST",
            &format!("/api/v1/agents/{}/stop?grace={}", enc(name), grace.as_secs()),
            None,
        )?;
        // 202: still ending; the server kills it when the grace is over.
        let deadline = std::time::Instant::now() + grace + std::time::Duration::from_secs(40);
        let mut v = v;
        while v.is_live() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(200));
            v = Control::get(self, name)?;
        }
        Ok(v)
    }

    fn restart(&self, name: &str) -> Result<AgentView> {
        self.typed("POST", &format!("/api/v1/agents/{}/restart", enc(name)), None)
    }

    fn archive_get(&self, name: &str, path: &Path, out: &mut dyn std::io::Write) -> Result<u64> {
        let url = self.archive_url(name, path);
        let mut resp = self
            .http
            .get(&url)
            .header("Authorization", &self.auth())
            .call()
            .map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(self.error_of(status, resp.body_mut().read_to_string().unwrap_or_default()));
        }
        let mut body = resp.body_mut().as_reader();
        std::io::copy(&mut body, out)
            .map_err(|e| Error::internal(format!("reading the copy from {}: {e}", self.base)))
    }

    fn archive_put(
        &self,
        name: &str,
        path: &Path,
        top: Option<&std::ffi::OsStr>,
        input: &mut dyn std::io::Read,
    ) -> Result<u64> {
        let top = top.map(|t| format!("&top={}", enc(&t.to_string_lossy()))).unwrap_or_default();
        let url = format!("{}{top}", self.archive_url(name, path));
        let mut resp = self
            .http
            .put(&url)
            .header("Authorization", &self.auth())
            .header("Content-Type", "application/x-tar")
            .send(ureq::SendBody::from_reader(input))
            .map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        if !status.is_success() {
            return Err(self.error_of(status, text));
        }
        Ok(serde_json::from_str::<Value>(&text).ok().and_then(|v| v["bytes"].as_u64()).unwrap_or(0))
    }

    fn volumes(&self) -> Result<Vec<agentbox_engine::volumes::VolumeView>> {
        self.typed("GET", "/api/v1/volumes", None)
    }

    fn changes(&self, name: &str) -> Result<Vec<Change>> {
        self.typed("GET", &format!("/api/v1/agents/{}/changes", enc(name)), None)
    }

    fn apply(&self, name: &str, req: &ApplyRequest) -> Result<Applied> {
        let body = serde_json::to_value(req).map_err(|e| Error::internal(e.to_string()))?;
        self.typed("POST", &format!("/api/v1/agents/{}/apply", enc(name)), Some(&body))
    }

    fn git_patch(&self, name: &str) -> Result<Vec<u8>> {
        self.download(&format!("/api/v1/agents/{}/patch", enc(name)))
    }

    fn git_branch(
        &self,
        name: &str,
        req: &agentbox_engine::workspace::gitapply::BranchRequest,
    ) -> Result<agentbox_engine::workspace::gitapply::BranchMade> {
        let body = serde_json::to_value(req).map_err(|e| Error::internal(e.to_string()))?;
        self.typed("POST", &format!("/api/v1/agents/{}/branch", enc(name)), Some(&body))
    }

    fn apply_undo(&self, name: &str, force: bool) -> Result<Applied> {
        self.typed(
            "POST",
            &format!("/api/v1/agents/{}/apply/undo", enc(name)),
            Some(&json!({ "force": force })),
        )
    }

    fn checkpoint(&self, name: &str, message: &str) -> Result<Checkpoint> {
        let body = json!({ "message": message });
        self.typed("POST", &format!("/api/v1/agents/{}/checkpoints", enc(name)), Some(&body))
    }

    fn checkpoints(&self, name: &str) -> Result<Vec<Checkpoint>> {
        self.typed("GET", &format!("/api/v1/agents/{}/checkpoints", enc(name)), None)
    }

    fn checkpoint_remove(&self, name: &str, id: &str) -> Result<()> {
        Remote::send(self, "DELETE", &format!("/api/v1/agents/{}/checkpoints/{}", enc(name), enc(id)), None)
            .map(drop)
    }

    fn rollback(&self, name: &str, id: &str) -> Result<AgentView> {
        self.typed("POST", &format!("/api/v1/agents/{}/checkpoints/{}/rollback", enc(name), enc(id)), None)
    }

    fn fork(&self, name: &str, new: &str, at: Option<&str>, stopped: bool) -> Result<AgentView> {
        let body = json!({ "name": new, "at": at, "stopped": stopped });
        self.typed("POST", &format!("/api/v1/agents/{}/fork", enc(name)), Some(&body))
    }

    fn volume_create(&self, name: &str) -> Result<agentbox_engine::volumes::VolumeView> {
        self.typed("POST", "/api/v1/volumes", Some(&json!({ "name": name })))
    }

    fn volume_remove(&self, name: &str) -> Result<()> {
        Remote::send(self, "DELETE", &format!("/api/v1/volumes/{}", enc(name)), None).map(drop)
    }

    fn pause(&self, name: &str) -> Result<AgentView> {
        self.typed("POST", &format!("/api/v1/agents/{}/pause", enc(name)), None)
    }

    fn pause_when_idle(&self, name: &str, after: Option<std::time::Duration>) -> Result<AgentView> {
        let secs = after.map_or(0, |d| d.as_secs());
        self.typed("POST", &format!("/api/v1/agents/{}/pause?after={secs}", enc(name)), None)
    }

    fn resume(&self, name: &str) -> Result<AgentView> {
        self.typed("POST", &format!("/api/v1/agents/{}/resume", enc(name)), None)
    }

    fn remove(&self, name: &str, force: bool) -> Result<()> {
        self.send("DELETE", &format!("/api/v1/agents/{}?force={force}", enc(name)), None).map(drop)
    }

    fn clean(&self) -> Result<Vec<String>> {
        self.typed("POST", "/api/v1/clean", None)
    }

    fn send(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| Error::invalid("a server takes text input only (UTF-8)"))?;
        let body = json!({ "text": text, "enter": false });
        Remote::send(self, "POST", &format!("/api/v1/agents/{}/input", enc(name)), Some(&body)).map(drop)
    }

    fn screen(&self, name: &str, ansi: bool) -> Result<ScreenView> {
        self.typed("GET", &format!("/api/v1/agents/{}/screen?ansi={ansi}", enc(name)), None)
    }

    fn log_range(&self, name: &str, offset: Option<u64>, raw: bool) -> Result<LogBytes> {
        let offset = offset.map(|o| format!("&offset={o}")).unwrap_or_default();
        let chunk: LogChunk =
            self.typed("GET", &format!("/api/v1/agents/{}/logs?raw={raw}{offset}", enc(name)), None)?;
        Ok(chunk.into())
    }

    fn log_offset(&self, name: &str, ms: u64) -> Result<u64> {
        let at: LogChunk =
            self.typed("GET", &format!("/api/v1/agents/{}/logs?since={ms}&limit=0", enc(name)), None)?;
        Ok(at.offset)
    }

    fn log_tail(&self, name: &str, lines: usize, raw: bool) -> Result<(Vec<u8>, u64)> {
        // The server's last chunk (bounded) holds the last lines of any agent that writes lines;
        // rendered here unless the bytes are asked for.
        let last: LogChunk =
            self.typed("GET", &format!("/api/v1/agents/{}/logs?raw=true", enc(name)), None)?;
        let last = LogBytes::from(last);
        let bytes = match raw {
            true => last.data,
            false => agentbox_engine::logs::render_bytes(&last),
        };
        Ok((agentbox_engine::logs::tail_lines(&bytes, lines).to_vec(), last.next_offset))
    }

    fn net_records(&self, name: &str, limit: usize) -> Result<Vec<AuditRecord>> {
        self.typed("GET", &format!("/api/v1/agents/{}/net?limit={limit}", enc(name)), None)
    }

    fn allow(&self, name: &str, host: &HostRule, once: bool, always: bool) -> Result<()> {
        let body = json!({ "host": host.to_string(), "once": once, "always": always });
        Remote::send(self, "POST", &format!("/api/v1/agents/{}/allow", enc(name)), Some(&body)).map(drop)
    }

    fn revoke(&self, name: &str, host: &HostRule, always: bool) -> Result<()> {
        let body = json!({ "host": host.to_string(), "always": always });
        Remote::send(self, "POST", &format!("/api/v1/agents/{}/deny", enc(name)), Some(&body)).map(drop)
    }

    fn events(&self, limit: usize, kind: Option<&str>) -> Result<Vec<Event>> {
        let kind = kind.map(|k| format!("&event={}", enc(k))).unwrap_or_default();
        self.typed("GET", &format!("/api/v1/events?limit={limit}{kind}"), None)
    }

    fn hitl_list(&self, all: bool) -> Result<Vec<HitlView>> {
        self.typed("GET", &format!("/api/v1/hitl?all={all}"), None)
    }

    fn answer_hitl(&self, id: i64, text: &str, enter: bool) -> Result<HitlView> {
        let body = json!({ "text": text, "enter": enter });
        self.typed("POST", &format!("/api/v1/hitl/{id}/answer"), Some(&body))
    }

    fn tasks(&self) -> Result<Vec<TaskView>> {
        self.typed("GET", "/api/v1/tasks", None)
    }

    fn task(&self, id: &str) -> Result<TaskDetail> {
        self.typed("GET", &format!("/api/v1/tasks/{}", enc(id)), None)
    }

    fn task_view(&self, id: &str) -> Result<TaskView> {
        // The detail is the view with more fields beside it.
        self.typed("GET", &format!("/api/v1/tasks/{}", enc(id)), None)
    }

    fn submit_task(&self, text: &str, format: ManifestFormat) -> Result<TaskView> {
        let document = agentbox_core::manifest_document(text, format)?;
        self.typed("POST", "/api/v1/tasks", Some(&json!({ "manifest": document })))
    }

    fn cancel_task(&self, id: &str) -> Result<TaskView> {
        self.typed("DELETE", &format!("/api/v1/tasks/{}", enc(id)), None)
    }

    fn task_log(&self, id: &str) -> Result<String> {
        let bytes = self.download(&format!("/api/v1/tasks/{}/logs", enc(id)))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn download_artifacts(&self, id: &str, dest: &Path) -> Result<Vec<Artifact>> {
        let list: Vec<Artifact> = self.typed("GET", &format!("/api/v1/tasks/{}/artifacts", enc(id)), None)?;
        for a in &list {
            // The names come from the server: nothing outside DEST.
            agentbox_engine::tasks::artifacts::check_rel(&a.path)?;
            let bytes = self.download(&format!("/api/v1/tasks/{}/artifacts/{}", enc(id), enc(&a.path)))?;
            let to = dest.join(&a.path);
            if let Some(p) = to.parent() {
                std::fs::create_dir_all(p)?;
            }
            std::fs::write(&to, bytes)?;
        }
        Ok(list)
    }
}
