//! The web dashboard: server-rendered pages (maud) that htmx keeps live, and an xterm.js terminal
//! per agent over the attach WebSocket. The front-end files are vendored (assets/vendor) and
//! compiled into the binary.

use std::collections::BTreeMap;

use axum::extract::{Form, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use maud::{html, Markup};
use serde::Deserialize;

use super::auth::Scope;
use super::extract::{blocking, ApiError, ApiQuery};
use super::layout::{error_fragment, fragment, page};
use super::state::Shared;
use super::store::with_store;
use agentbox_engine::views::AgentView;
use agentbox_engine::{logs, net, session};

use crate::spawn_request::SpawnRequest;

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/", get(index))
        .route("/grid", get(grid))
        .route("/login", get(login_page).post(login_form))
        .route("/agents/{name}", get(agent_page))
        .route("/ui/agents", get(agent_rows))
        .route("/ui/spawn", post(spawn_form))
        .route("/ui/agents/{name}/send", post(send_form))
        .route("/ui/agents/{name}/logs", get(logs_fragment))
        .route("/ui/agents/{name}/events", get(events_fragment))
        .route("/ui/agents/{name}/net", get(net_fragment))
        .route("/ui/agents/{name}/screen", get(screen_fragment))
        .route("/assets/{file}", get(asset))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.0} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

async fn index(State(state): State<Shared>, Extension(scope): Extension<Scope>) -> Response {
    let home = state.home.clone();
    let profiles = blocking(move || agentbox_engine::profiles::all(&home)).await.unwrap_or_default();
    page(
        "agents",
        html! {
            h1 { "Agents" }
            table #agents {
                thead { tr { th { "name" } th { "state" } th { "profile" } th { "tags" } th { "CPU" } th { "memory" } th { "command" } } }
                tbody hx-get="/ui/agents" hx-trigger="load, every 2s" {}
            }
            @if scope == Scope::Controller {
                h2 { "New agent" }
                form #spawn hx-post="/ui/spawn" hx-target="#spawn-result" {
                    label { "name " input name="name" required pattern="[a-z0-9][a-z0-9\\-]{0,62}" placeholder="fix-tests"; }
                    label { "profile "
                        select name="profile" {
                            option value="" { "(none: a shell)" }
                            @for (p, _) in &profiles { option value=(p.name) { (p.name) } }
                        }
                    }
                    label { "workspace " input name="workspace" placeholder="host directory (empty: a new one)"; }
                    label { "network "
                        select name="network" {
                            option value="" { "(default)" }
                            option value="none" { "none" }
                            option value="proxy" { "proxy" }
                            option value="full" { "full" }
                        }
                    }
                    label { "memory " input name="memory" size="6" placeholder="2G"; }
                    label { "CPUs " input name="cpus" size="4" placeholder="1"; }
                    label { "processes " input name="pids" size="5" placeholder="512"; }
                    label { "command " input name="command" placeholder="(default: the profile's, or a shell)"; }
                    button type="submit" { "Spawn" }
                }
                div #spawn-result {}
            }
        },
    )
}

async fn agent_rows(State(state): State<Shared>) -> Response {
    let snapshot = state.fresh_snapshot().await;
    let usage = state.usage();
    fragment(html! {
        @if snapshot.agents.is_empty() { tr { td colspan="7" { "No agents yet." } } }
        @for a in &snapshot.agents {
            @let u = usage.get(&a.name);
            tr data-agent=(a.name) {
                td { a href={ "/agents/" (a.name) } { (a.name) } }
                td.state data-state=(a.state) { (a.state) @if let Some(c) = a.exit_code { " (" (c) ")" } }
                td { (a.profile.as_deref().unwrap_or("-")) }
                td { @for (k, v) in &a.tags { span.tag { (k) "=" (v) } " " } }
                td { @if let Some(u) = u { (format!("{:.0}%", u.cpu_percent)) } @else { "-" } }
                td { @if let Some(u) = u { (human_bytes(u.rss_bytes)) } @else { "-" } }
                td.command { (a.command.join(" ")) }
            }
        }
    })
}

/// The create form's fields, as strings (empty means not given).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpawnForm {
    name: String,
    #[serde(default)]
    profile: String,
    #[serde(default)]
    workspace: String,
    #[serde(default)]
    network: String,
    #[serde(default)]
    memory: String,
    #[serde(default)]
    cpus: String,
    #[serde(default)]
    pids: String,
    #[serde(default)]
    command: String,
}

fn some(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

impl SpawnForm {
    fn request(&self) -> Result<SpawnRequest, ApiError> {
        let number = |field: &str, v: &str| -> Result<Option<f64>, ApiError> {
            some(v)
                .map(|s| {
                    s.parse::<f64>()
                        .map_err(|_| ApiError::bad_request(format!("{field}: '{s}' is not a number")))
                })
                .transpose()
        };
        Ok(SpawnRequest {
            name: self.name.trim().to_string(),
            profile: some(&self.profile),
            workspace: some(&self.workspace),
            network: some(&self.network),
            memory: some(&self.memory),
            cpus: number("CPUs", &self.cpus)?,
            pids: number("processes", &self.pids)?.map(|n| n as u64),
            command: self.command.split_whitespace().map(str::to_string).collect(),
            ..Default::default()
        })
    }
}

async fn spawn_form(State(state): State<Shared>, Form(form): Form<SpawnForm>) -> Response {
    let req = match form.request() {
        Ok(r) => r,
        Err(e) => return error_fragment(&e),
    };
    match super::spawner::spawn(&state.home, &req).await {
        Ok(v) => {
            state.refresh().await;
            let mut r = html! { p { "Spawned " (v.name) "." } }.into_response();
            if let Ok(loc) = HeaderValue::from_str(&format!("/agents/{}", v.name)) {
                r.headers_mut().insert("hx-redirect", loc);
            }
            r
        }
        Err(e) => error_fragment(&e),
    }
}

async fn agent_page(
    State(state): State<Shared>,
    Path(name): Path<String>,
    Extension(scope): Extension<Scope>,
) -> Result<Response, ApiError> {
    let home = state.home.clone();
    let rec = blocking(move || with_store(&home, |s| agentbox_engine::agents::get(s, &name))).await?;
    let a = AgentView::of(&rec);
    let controller = scope == Scope::Controller;
    let base = format!("/ui/agents/{}", a.name);
    Ok(page(
        &a.name,
        html! {
            h1 { (a.name) " " small.state data-state=(a.state) { (a.state) } }
            p.meta { "workspace " code { (a.workspace) } " · network " (a.network)
                @if let Some(p) = &a.profile { " · profile " (p) } }
            @if controller {
                div.actions {
                    button hx-post={ "/api/v1/agents/" (a.name) "/kill" } hx-swap="none" hx-confirm={ "Kill " (a.name) "?" } { "Kill" }
                    " "
                    button hx-post={ "/api/v1/agents/" (a.name) "/restart" } hx-swap="none" { "Restart" }
                    form.send hx-post={ (base) "/send" } hx-target="#send-result" {
                        input name="text" placeholder="type into the agent, then Enter" size="50";
                        button type="submit" { "Send" }
                    }
                    span #send-result {}
                }
            }
            p #terminal-status { "connecting..." }
            @if agentbox_engine::agents::is_live_state(&a.state) {
                div #terminal data-agent=(a.name) data-role=(if controller { "controller" } else { "observer" }) {}
            } @else {
                p { "The agent is not running; its last screen:" }
                pre.screen hx-get={ (base) "/screen" } hx-trigger="load" {}
            }
            h2 { "Logs" }
            pre.logs hx-get={ (base) "/logs" } hx-trigger="load, every 3s" {}
            h2 { "Events" }
            div hx-get={ (base) "/events" } hx-trigger="load, every 3s" {}
            h2 { "Network" }
            div hx-get={ (base) "/net" } hx-trigger="load, every 3s" {}
        },
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendForm {
    text: String,
}

async fn send_form(
    State(state): State<Shared>,
    Path(name): Path<String>,
    Form(form): Form<SendForm>,
) -> Response {
    let home = state.home.clone();
    let mut bytes = form.text.into_bytes();
    bytes.push(b'\r');
    match blocking(move || with_store(&home, |s| session::send(s, &name, &bytes))).await {
        Ok(()) => html! { "sent" }.into_response(),
        Err(e) => error_fragment(&e),
    }
}

async fn logs_fragment(State(state): State<Shared>, Path(name): Path<String>) -> Response {
    let home = state.home.clone();
    // The lines the agent's screen showed (a TUI's log reads as text), the last 200.
    let text = blocking(move || {
        with_store(&home, |s| {
            let rec = agentbox_engine::agents::get(s, &name)?;
            let path = agentbox_supervisor::paths::log(&agentbox_engine::agents::state_dir(&rec));
            logs::render_tail_at(&path, 200)
        })
    });
    match text.await {
        Ok(t) => html! { (String::from_utf8_lossy(&t)) }.into_response(),
        Err(e) => error_fragment(&e),
    }
}

async fn events_fragment(State(state): State<Shared>, Path(name): Path<String>) -> Response {
    let home = state.home.clone();
    let n = name.clone();
    let events = blocking(move || with_store(&home, |s| Ok(s.events(2000, None)?))).await;
    match events {
        Ok(all) => html! {
            table.events { @for e in all.iter().rev().filter(|e| e.agent == n).take(50) {
                tr { td { (agentbox_proxy::format_utc(e.at as u64)) } td { (e.event) } td { (e.detail) } }
            } }
        }
        .into_response(),
        Err(e) => error_fragment(&e),
    }
}

async fn net_fragment(State(state): State<Shared>, Path(name): Path<String>) -> Response {
    let home = state.home.clone();
    match blocking(move || with_store(&home, |s| net::net_records(s, &name, 200))).await {
        Ok(records) if records.is_empty() => html! { p { "No connections recorded." } }.into_response(),
        Ok(records) => html! {
            table.net {
                thead { tr { th { "time" } th { "decision" } th { "method" } th { "destination" } th { "up" } th { "down" } th { "reason" } } }
                tbody { @for r in records.iter().rev().filter(|r| r.event == "decision" || r.event == "close") {
                    tr { td { (agentbox_proxy::format_utc(r.ts_ms)) } td { (r.event) ": " (r.decision) } td { (r.method) }
                         td { (r.host) ":" (r.port) } td { (r.bytes_up) } td { (r.bytes_down) }
                         td { (r.reason.as_deref().unwrap_or("")) } }
                } }
            }
        }
        .into_response(),
        Err(e) => error_fragment(&e),
    }
}

async fn screen_fragment(State(state): State<Shared>, Path(name): Path<String>) -> Response {
    let home = state.home.clone();
    match blocking(move || with_store(&home, |s| session::screen(s, &name, false))).await {
        Ok((_, text)) => html! { (text) }.into_response(),
        Err(e) => error_fragment(&e),
    }
}

async fn grid(State(state): State<Shared>) -> Response {
    let snapshot = state.fresh_snapshot().await;
    page(
        "grid",
        html! {
            h1 { "Running agents" }
            div.grid {
                @for a in snapshot.agents.iter().filter(|a| a.is_live()) {
                    figure.thumb {
                        figcaption { a href={ "/agents/" (a.name) } { (a.name) } }
                        pre.screen hx-get={ "/ui/agents/" (a.name) "/screen" } hx-trigger="load, every 2s" {}
                    }
                }
            }
        },
    )
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    token: Option<String>,
}

fn login_form_page(message: Option<&str>) -> Markup {
    html! {
        h1 { "Sign in" }
        @if let Some(m) = message { p.error role="alert" { (m) } }
        p { "Paste the token from " code { "AGENTBOX_HOME/api-token" } " (or api-token-viewer to watch only)." }
        form method="post" action="/login" hx-boost="false" {
            input type="password" name="token" size="70" autofocus autocomplete="off";
            button type="submit" { "Sign in" }
        }
    }
}

async fn login_page(ApiQuery(q): ApiQuery<LoginQuery>) -> Response {
    if q.token.is_some() {
        // A token in a URL ends up in history, logs and Referer headers.
        return (
            StatusCode::BAD_REQUEST,
            page("sign in", login_form_page(Some("Tokens do not go in URLs: paste it into the form."))),
        )
            .into_response();
    }
    page("sign in", login_form_page(None))
}

/// Checks the token and hands the page a session token for this origin's storage; the response
/// sets no cookie.
async fn login_form(State(state): State<Shared>, Form(f): Form<BTreeMap<String, String>>) -> Response {
    let token = f.get("token").map(String::as_str).unwrap_or("").trim();
    let scope = match state.tokens.scope_of(token) {
        Some(s) if !token.starts_with("abs1.") => s,
        _ => {
            return (StatusCode::UNAUTHORIZED, page("sign in", login_form_page(Some("Wrong token."))))
                .into_response()
        }
    };
    let session = state.tokens.session(scope);
    page(
        "signed in",
        html! {
            meta name="agentbox-session" content=(session);
            p { "Signed in. " a href="/" { "Go to the dashboard" } }
        },
    )
}

const DASHBOARD_CSS: &str = "
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #222; }
nav { background: #1d2330; padding: .6em 1em; } nav a { color: #dde; margin-right: 1em; text-decoration: none; }
main { padding: 1em 1.5em; }
table { border-collapse: collapse; } td, th { padding: .25em .7em; text-align: left; border-bottom: 1px solid #eee; }
td.state[data-state=running] { color: #07710f; } td.state[data-state=failed], td.state[data-state=killed] { color: #a00; }
.tag { background: #eef; border-radius: 3px; padding: 0 .3em; } .error { color: #a00; }
form#spawn label { display: inline-block; margin: .3em .8em .3em 0; }
#terminal { width: 100%; height: 420px; background: #000; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; } .thumb { margin: 0; }
.thumb pre { font-size: 6px; line-height: 1; width: 42em; height: 25em; overflow: hidden; background: #111; color: #ddd; }
pre.logs { max-height: 20em; overflow: auto; background: #f6f6f6; padding: .5em; }
.actions { margin: .5em 0; } form.send { display: inline; margin-left: 1em; }
";

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind): (&'static [u8], &str) = match file.as_str() {
        "htmx.min.js" => (include_bytes!("../assets/vendor/htmx.min.js"), "text/javascript"),
        "xterm.js" => (include_bytes!("../assets/vendor/xterm.js"), "text/javascript"),
        "addon-fit.js" => (include_bytes!("../assets/vendor/addon-fit.js"), "text/javascript"),
        "xterm.css" => (include_bytes!("../assets/vendor/xterm.css"), "text/css"),
        "dashboard.js" => (include_bytes!("../assets/dashboard.js"), "text/javascript"),
        "dashboard.css" => (DASHBOARD_CSS.as_bytes(), "text/css"),
        _ => return (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "public, max-age=3600")], body).into_response()
}
