//! Telling people: a desktop notification where `notify-send` exists, and a webhook from
//! `[notify] webhook` in config.toml (a JSON body, retried with backoff). The terminal bell for
//! attached terminals and `grid` panes is rung by the supervisor itself.
//!
//! Each notice is sent on its own thread so a slow webhook never holds an agent's supervisor;
//! [`Notifier::finish`] waits (boundedly) for those still sending before the process exits.

use std::path::PathBuf;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::config::NotifySettings;

/// Attempts per webhook notice, and the pause before each retry.
const WEBHOOK_BACKOFF: &[Duration] =
    &[Duration::ZERO, Duration::from_millis(500), Duration::from_secs(2), Duration::from_secs(5)];

#[derive(Debug, Default)]
pub struct Notifier {
    webhook: Option<String>,
    desktop: Option<PathBuf>,
    pending: Mutex<Vec<JoinHandle<()>>>,
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

/// Checks a webhook URL from the config: http or https, nothing else.
pub fn check_webhook(url: &str) -> crate::error::Result<()> {
    crate::ensure!(
        (url.starts_with("http://") || url.starts_with("https://"))
            && url.len() > 8
            && !url.contains(char::is_whitespace),
        "config.toml: [notify] webhook '{url}' is not an http:// or https:// URL"
    );
    Ok(())
}

impl Notifier {
    pub fn new(settings: &NotifySettings) -> crate::error::Result<Self> {
        if let Some(url) = &settings.webhook {
            check_webhook(url)?;
        }
        let desktop = if settings.desktop == Some(false) { None } else { find_in_path("notify-send") };
        Ok(Self { webhook: settings.webhook.clone(), desktop, pending: Mutex::new(Vec::new()) })
    }

    /// Sends one notice: `event` such as `hitl.opened`, a one-line `title` and `body` for people,
    /// and `fields` merged into the webhook's JSON body.
    pub fn send(&self, event: &str, title: &str, body: &str, fields: Value) {
        if let Some(program) = &self.desktop {
            let child = std::process::Command::new(program)
                // `--`: the body is the prompt text an agent printed; it must not read as an option.
                .args(["--app-name=agentbox", "--", title, body])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn();
            if let Ok(mut c) = child {
                self.track(std::thread::spawn(move || {
                    let _ = c.wait();
                }));
            }
        }
        if let Some(url) = self.webhook.clone() {
            let mut payload = json!({
                "event": event,
                "title": title,
                "message": body,
                "at": agentbox_store::now_ms(),
            });
            if let (Some(p), Value::Object(extra)) = (payload.as_object_mut(), fields) {
                p.extend(extra);
            }
            self.track(std::thread::spawn(move || post_with_retries(&url, &payload)));
        }
    }

    fn track(&self, handle: JoinHandle<()>) {
        if let Ok(mut p) = self.pending.lock() {
            p.retain(|h| !h.is_finished());
            p.push(handle);
        }
    }

    /// Waits up to `limit` for notices still being sent.
    pub fn finish(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let handles = self.pending.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default();
        for h in handles {
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}

fn post_with_retries(url: &str, payload: &Value) {
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    for (attempt, pause) in WEBHOOK_BACKOFF.iter().enumerate() {
        std::thread::sleep(*pause);
        let mut body = payload.clone();
        if let Some(p) = body.as_object_mut() {
            p.insert("attempt".into(), json!(attempt + 1));
        }
        match http.post(url).header("User-Agent", "agentbox").send_json(&body) {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => agentbox_core::note(format_args!(
                "webhook {url}: HTTP {} (attempt {})",
                r.status(),
                attempt + 1
            )),
            Err(e) => agentbox_core::note(format_args!("webhook {url}: {e} (attempt {})", attempt + 1)),
        }
    }
}
