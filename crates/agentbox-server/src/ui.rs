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
        .route("/ui/waiting", get(waiting_count))
        .route("/ui/agents/{name}/remove", post(remove_form))
        .route("/ui/spawn", post(spawn_form))
        .route("/ui/bulk", post(super::ui_bulk::bulk_form))
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
            form #filters.filters hx-get="/ui/agents" hx-target="#agents tbody" hx-trigger="input changed delay:250ms, change, submit" {
                input type="search" name="q" placeholder="search name, tag, profile, command";
                select name="state" {
                    option value="" { "every state" }
                    option value="running" { "running" }
                    option value="waiting" { "waiting for you" }
                    option value="paused" { "paused" }
                    option value="stopped" { "stopped" }
                }
            }
            @if scope == Scope::Controller {
                div.bulk {
                    "Ticked: "
                    @for (action, confirm) in [("stop", None), ("pause", None), ("resume", None), ("kill", Some("Kill the ticked agents?")), ("restart", None), ("remove", Some("Remove the ticked agents and their workspaces?"))] {
                        button.bulk-action hx-post="/ui/bulk" hx-include="#agents input.sel" hx-target="#bulk-result" name="action" value=(action) hx-confirm=[confirm] { (action) }
                        " "
                    }
                    span #bulk-result {}
                }
            }
            div.scroll {
                table #agents {
                    thead { tr { @if scope == Scope::Controller { th { input #sel-all type="checkbox" aria-label="tick every agent shown"; } } th { "name" } th { "state" } th.wide { "age" } th.wide { "profile" } th { "tags" } th.wide { "CPU · memory" } th.wide { "command" } th {} } }
                    tbody hx-get="/ui/agents" hx-trigger="load, every 2s" hx-include="#filters" {}
                }
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
                    label { "from git " input name="from_git" placeholder="repository URL (cloned in a sandbox)"; }
                    label { "tags " input name="tags" placeholder="team=web env=dev"; }
                    label { "allowed hosts " input name="allow" placeholder="registry.npmjs.org *.pypi.org"; }
                    label.wide-field { "prompt " textarea name="prompt" rows="2" placeholder="typed into the agent once it runs" {} }
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

/// Open questions per agent (the newest one's prompt).
async fn waiting(state: &Shared) -> BTreeMap<String, String> {
    let home = state.home.clone();
    let open = blocking(move || with_store(&home, |s| Ok(s.hitl_list(true, 500)?))).await.unwrap_or_default();
    open.into_iter().map(|r| (r.agent, r.prompt)).collect()
}

/// The list's filters: words to find (name, tags, profile, command) and a state.
#[derive(Debug, Default, Deserialize)]
struct RowsQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    state: String,
}

impl RowsQuery {
    fn keeps(&self, a: &AgentView, live: bool, waiting: bool) -> bool {
        let state_ok = match self.state.as_str() {
            "running" => live,
            "waiting" => waiting,
            "paused" => a.state == agentbox_core::AgentState::Paused,
            "stopped" => !live,
            _ => true,
        };
        let text = format!(
            "{} {} {} {}",
            a.name,
            a.tags.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "),
            a.profile.as_deref().unwrap_or(""),
            a.command.join(" ")
        )
        .to_lowercase();
        state_ok && self.q.split_whitespace().all(|w| text.contains(&w.to_lowercase()))
    }
}

async fn agent_rows(
    State(state): State<Shared>,
    Extension(scope): Extension<Scope>,
    ApiQuery(filter): ApiQuery<RowsQuery>,
) -> Response {
    let snapshot = state.fresh_snapshot().await;
    let usage = state.usage();
    let asking = waiting(&state).await;
    let now = agentbox_proxy::now_ms() as i64;
    let shown: Vec<&AgentView> = snapshot
        .agents
        .iter()
        .filter(|a| {
            let live = agentbox_engine::agents::is_live_state(&a.state);
            filter.keeps(a, live, live && asking.contains_key(&a.name))
        })
        .collect();
    fragment(html! {
        @if snapshot.agents.is_empty() { tr { td colspan="9" { "No agents yet." } } }
        @else if shown.is_empty() { tr { td colspan="9" { "No agent matches." } } }
        @for a in shown {
            @let live = agentbox_engine::agents::is_live_state(&a.state);
            @let u = usage.get(&a.name).filter(|_| live);
            @let question = asking.get(&a.name).filter(|_| live);
            tr data-agent=(a.name) {
                @if scope == Scope::Controller { td { input.sel type="checkbox" name="sel" value=(a.name) aria-label={ "tick " (a.name) }; } }
                td { a href={ "/agents/" (a.name) } { (a.name) } }
                @if let Some(q) = question {
                    td.state data-state="waiting" title=(q) { a href="/hitl" { "waiting for you" } }
                } @else {
                    td.state data-state=(a.state) { (a.state) @if let Some(c) = a.exit_code { " (" (c) ")" } }
                }
                td.age.wide { (agentbox_core::format_duration(std::time::Duration::from_secs(((now - a.created_at).max(0) / 1000) as u64))) }
                td.wide { (a.profile.as_deref().unwrap_or("-")) }
                td { @for (k, v) in &a.tags { span.tag { (k) "=" (v) } " " } }
                td.wide { @if let Some(u) = u { (format!("{:.0}%", u.cpu_percent)) " · " (human_bytes(u.rss_bytes)) } @else { "-" } }
                td.command.wide { (a.command.join(" ")) }
                td.row-actions {
                    @if scope == Scope::Controller {
                        @if live {
                            button hx-post={ "/api/v1/agents/" (a.name) "/stop" } hx-swap="none" { "Stop" }
                            @if a.state == agentbox_core::AgentState::Paused {
                                button hx-post={ "/api/v1/agents/" (a.name) "/resume" } hx-swap="none" { "Resume" }
                            } @else {
                                button hx-post={ "/api/v1/agents/" (a.name) "/pause" } hx-swap="none" { "Pause" }
                            }
                            button hx-post={ "/api/v1/agents/" (a.name) "/kill" } hx-swap="none" hx-confirm={ "Kill " (a.name) "?" } { "Kill" }
                        } @else {
                            button hx-post={ "/api/v1/agents/" (a.name) "/restart" } hx-swap="none" { "Restart" }
                            button hx-post={ "/ui/agents/" (a.name) "/remove" } hx-swap="none" hx-confirm={ "Remove " (a.name) " and its workspace?" } { "Remove" }
                        }
                    }
                }
            }
        }
    })
}

/// The count on the navigation's `waiting` link.
async fn waiting_count(State(state): State<Shared>) -> Response {
    let n = waiting(&state).await.len();
    fragment(html! { @if n > 0 { span.count { (n) } } })
}

/// Removes a stopped agent and goes back to the list.
async fn remove_form(State(state): State<Shared>, Path(name): Path<String>) -> Response {
    let home = state.home.clone();
    match blocking(move || with_store(&home, |s| agentbox_engine::lifecycle::remove(&home, s, &name, false)))
        .await
    {
        Ok(()) => {
            state.refresh().await;
            let mut r = html! { "removed" }.into_response();
            r.headers_mut().insert("hx-redirect", HeaderValue::from_static("/"));
            r
        }
        Err(e) => error_fragment(&e),
    }
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
    #[serde(default)]
    from_git: String,
    #[serde(default)]
    tags: String,
    #[serde(default)]
    allow: String,
    #[serde(default)]
    prompt: String,
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
        let mut tags = BTreeMap::new();
        for t in self.tags.split_whitespace() {
            let (k, v) = agentbox_engine::agents::parse_tag(t)
                .map_err(|e| ApiError::bad_request(format!("tags: {e}")))?;
            tags.insert(k, v);
        }
        Ok(SpawnRequest {
            name: self.name.trim().to_string(),
            from_git: some(&self.from_git),
            tags,
            allow: self.allow.split_whitespace().map(str::to_string).collect(),
            prompt: some(&self.prompt),
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
) -> Response {
    let home = state.home.clone();
    let rec = match blocking(move || with_store(&home, |s| agentbox_engine::agents::get(s, &name))).await {
        Ok(r) => r,
        Err(e) => return error_page(&e),
    };
    let a = AgentView::of(&rec);
    let controller = scope == Scope::Controller;
    let live = agentbox_engine::agents::is_live_state(&a.state);
    let base = format!("/ui/agents/{}", a.name);
    page(
        &a.name,
        html! {
            h1 { (a.name) " " small.state data-state=(a.state) { (a.state) @if let Some(c) = a.exit_code { " (" (c) ")" } } }
            p.meta { "workspace " code { (a.workspace) } " · network " (a.network)
                @if let Some(p) = &a.profile { " · profile " (p) } }
            @if controller {
                div.actions {
                    @if live {
                        button hx-post={ "/api/v1/agents/" (a.name) "/stop" } hx-swap="none" { "Stop" }
                        " "
                        @if a.state == agentbox_core::AgentState::Paused {
                            button hx-post={ "/api/v1/agents/" (a.name) "/resume" } hx-swap="none" { "Resume" }
                        } @else {
                            button hx-post={ "/api/v1/agents/" (a.name) "/pause" } hx-swap="none" { "Pause" }
                        }
                        " "
                        button hx-post={ "/api/v1/agents/" (a.name) "/kill" } hx-swap="none" hx-confirm={ "Kill " (a.name) "?" } { "Kill" }
                        " "
                        button hx-post={ "/api/v1/agents/" (a.name) "/restart" } hx-swap="none" { "Restart" }
                        form.send hx-post={ (base) "/send" } hx-target="#send-result" {
                            input name="text" placeholder="type into the agent, then Enter" size="40";
                            button type="submit" { "Send" }
                        }
                        span #send-result {}
                    } @else {
                        button hx-post={ "/api/v1/agents/" (a.name) "/restart" } hx-swap="none" { "Restart" }
                        " "
                        button hx-post={ (base) "/remove" } hx-swap="none" hx-confirm={ "Remove " (a.name) " and its workspace?" } { "Remove" }
                    }
                }
            }
            @if live {
                p #terminal-status { "connecting..." }
                div #terminal data-agent=(a.name) data-role=(if controller { "controller" } else { "observer" }) {}
            } @else {
                p { "The agent is not running; its last screen:" }
                pre.screen hx-get={ (base) "/screen" } hx-trigger="load" {}
            }
            h2 { "Workspace" }
            div #workspace hx-get={ (base) "/workspace" } hx-trigger="load" {}
            @if a.state == agentbox_core::AgentState::Running {
                h2 { "Ports" }
                div #ports hx-get={ (base) "/ports" } hx-trigger="load, every 5s" {}
            }
            h2 { "Logs" }
            pre.logs hx-get={ (base) "/logs" } hx-trigger="load, every 3s" {}
            h2 { "Events" }
            div.scroll hx-get={ (base) "/events" } hx-trigger="load, every 3s" {}
            h2 { "Network" }
            div.scroll hx-get={ (base) "/net" } hx-trigger="load, every 3s" {}
        },
    )
}

/// An error as a page of the dashboard, with the status it has in the API.
fn error_page(e: &ApiError) -> Response {
    let body = html! {
        h1 { "Not here" }
        p.error role="alert" { (e.message) }
        p { a href="/" { "Back to the agents" } }
    };
    (e.status, page("error", body)).into_response()
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

#[derive(Debug, Default, Deserialize)]
struct ScreenQuery {
    /// Draw the screen with its colours (the grid's thumbnails).
    #[serde(default)]
    color: bool,
}

async fn screen_fragment(
    State(state): State<Shared>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<ScreenQuery>,
) -> Response {
    let home = state.home.clone();
    let shown = blocking(move || {
        with_store(&home, |s| {
            let (rec, text) = session::screen(s, &name, q.color)?;
            let log = agentbox_supervisor::paths::log(&agentbox_engine::agents::state_dir(&rec));
            Ok((text, logs::terminal_size(&log)))
        })
    })
    .await;
    match (shown, q.color) {
        (Ok((text, (rows, cols))), true) => {
            crate::screen_html::screen(text.as_bytes(), rows, cols).into_response()
        }
        (Ok((text, _)), false) => html! { (text) }.into_response(),
        (Err(e), _) => error_fragment(&e),
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
                        pre.screen hx-get={ "/ui/agents/" (a.name) "/screen?color=true" } hx-trigger="load, every 2s" {}
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
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #222; background: #fafafa; }
nav { background: #1d2330; padding: .6em 1em; display: flex; flex-wrap: wrap; gap: .3em 1em; }
nav a { color: #dde; text-decoration: none; } nav a:hover { color: #fff; }
nav .count { background: #e8a317; color: #000; border-radius: 9px; padding: 0 .45em; margin-left: .3em; font-size: 12px; }
main { padding: 1em 1.5em; max-width: 100%; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; background: #fff; } td, th { padding: .3em .7em; text-align: left; border-bottom: 1px solid #eee; }
th { font-weight: 600; color: #555; }
button { font: inherit; padding: .2em .7em; border: 1px solid #bbb; border-radius: 4px; background: #fff; cursor: pointer; }
button:hover { background: #f0f0f0; } td.row-actions button { margin-right: .3em; }
button.choice { background: #eef6ff; border-color: #7aa7d8; }
[data-state=running] { color: #07710f; } [data-state=failed], [data-state=killed], [data-state=crashloop] { color: #a00; }
[data-state=waiting] { color: #b36b00; font-weight: 600; } [data-state=paused] { color: #2f5fa8; } [data-state=exited] { color: #555; }
section.hitl { background: #fff; border: 1px solid #e3d3a8; border-radius: 6px; padding: .5em 1em; margin: 1em 0; }
pre.screen { white-space: pre-wrap; word-break: break-all; max-width: 100%; overflow-x: auto; background: #111; color: #ddd; padding: .5em; }
.filters { display: flex; flex-wrap: wrap; gap: .5em; margin: .5em 0; } .filters input { width: 22em; }
label.wide-field { display: block; max-width: 100%; margin-right: 0; } form#spawn label.wide-field { flex-direction: column; } label.wide-field textarea { display: block; width: 30em; max-width: 100%; }
.tag { background: #eef; border-radius: 3px; padding: 0 .3em; } .error { color: #a00; }
form#spawn label { display: inline-block; margin: .3em .8em .3em 0; }
#terminal { width: 100%; height: 420px; background: #000; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; } .thumb { margin: 0; max-width: 100%; }
.thumb pre, .thumb pre.screen { font-size: 6px; line-height: 1.1; min-width: 48ch; min-height: 27em; max-width: 100%; overflow: auto; white-space: pre; word-break: normal; background: #111; color: #ddd; }
.bulk { margin: .3em 0; display: flex; flex-wrap: wrap; gap: .3em; align-items: center; } ul.bulk-outcomes { display: inline; margin: 0; padding: 0 0 0 .5em; } ul.bulk-outcomes li { display: inline; margin-right: .8em; }
pre.logs { max-height: 20em; overflow: auto; background: #f6f6f6; padding: .5em; }
.actions { margin: .5em 0; display: flex; flex-wrap: wrap; gap: .4em; align-items: center; }
form.send { display: flex; flex-wrap: wrap; gap: .3em; } input { max-width: 100%; }
code { word-break: break-all; } #terminal { max-width: 100%; overflow: hidden; }
textarea { width: 100%; max-width: 60em; font-family: ui-monospace, monospace; }
pre.logs { white-space: pre-wrap; word-break: break-all; }

@media (max-width: 700px) { .wide { display: none; } main { padding: .6em; } form.send input { width: 100%; } form#spawn label { display: flex; gap: .4em; margin-right: 0; } form#spawn label > * { flex: 1; min-width: 0; } td, th { padding: .3em .4em; } td.row-actions button { padding: .2em .4em; } }
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
