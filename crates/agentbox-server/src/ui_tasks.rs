//! Dashboard pages for tasks and the HITL queue.

use axum::extract::{Form, Path, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use maud::html;
use serde::Deserialize;

use super::auth::Scope;
use super::extract::{blocking, ApiError};
use super::layout::{error_fragment, page};
use super::state::Shared;
use super::store::with_store;
use agentbox_engine::tasks::{self, artifacts, TaskView};
use agentbox_engine::views::HitlView;
use agentbox_engine::{logs, session};

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/tasks", get(tasks_page))
        .route("/tasks/{id}", get(task_page))
        .route("/hitl", get(hitl_page))
        .route("/ui/tasks", get(task_rows).post(submit_form))
        .route("/ui/tasks/{id}", get(task_fragment))
        .route("/ui/hitl", get(hitl_rows))
        .route("/ui/hitl/{id}/answer", post(answer_form))
}

async fn tasks_page(Extension(scope): Extension<Scope>) -> Response {
    page(
        "tasks",
        html! {
            h1 { "Tasks" }
            div.scroll {
                table #tasks {
                    thead { tr { th { "id" } th { "name" } th { "state" } th { "attempt" } th { "reason" } } }
                    tbody hx-get="/ui/tasks" hx-trigger="load, every 2s" {}
                }
            }
            @if scope == Scope::Controller {
                h2 { "Submit a task" }
                form #submit hx-post="/ui/tasks" hx-target="#submit-result" {
                    textarea name="manifest" rows="12" cols="80" required
                        placeholder="version: \"1\"\nmetadata: {name: ...}\nagent: {profile: claude-code, prompt: ...}\nlifecycle: {timeout: 2h}" {}
                    br;
                    button type="submit" { "Submit" }
                }
                div #submit-result {}
            }
        },
    )
}

async fn task_rows(State(state): State<Shared>) -> Response {
    let home = state.home.clone();
    match blocking(move || with_store(&home, |s| tasks::list(&home, s))).await {
        Ok(list) => html! {
            @for t in list.iter().rev() {
                tr data-task=(t.id) {
                    td { a href={ "/tasks/" (t.id) } { code { (t.id) } } }
                    td { (t.name) }
                    td.state data-state=(t.state) { (t.state) }
                    td { (t.attempt) }
                    td { (t.reason) }
                }
            }
        }
        .into_response(),
        Err(e) => error_fragment(&e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitForm {
    manifest: String,
}

async fn submit_form(State(state): State<Shared>, Form(form): Form<SubmitForm>) -> Response {
    let home = state.home.clone();
    let submitted = blocking(move || {
        let m = tasks::parse_manifest(&form.manifest, agentbox_core::ManifestFormat::Yaml)?;
        with_store(&home, |s| tasks::submit(&home, s, &m))
    })
    .await;
    match submitted {
        Ok(t) => {
            let mut r = html! { p { "Submitted " (t.id) "." } }.into_response();
            if let Ok(loc) = HeaderValue::from_str(&format!("/tasks/{}", t.id)) {
                r.headers_mut().insert("hx-redirect", loc);
            }
            r
        }
        Err(e) => error_fragment(&e),
    }
}

async fn task_page(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Extension(scope): Extension<Scope>,
) -> Result<Response, ApiError> {
    let home = state.home.clone();
    let t = blocking(move || with_store(&home, |s| tasks::get(&home, s, &id))).await?;
    Ok(page(
        &format!("task {}", t.id),
        html! {
            h1 { "Task " code { (t.id) } " " (t.name) }
            @if scope == Scope::Controller && !t.state.is_final() {
                div.actions {
                    button hx-delete={ "/api/v1/tasks/" (t.id) } hx-swap="none" hx-confirm={ "Cancel task " (t.id) "?" } { "Cancel" }
                }
            }
            div #task hx-get={ "/ui/tasks/" (t.id) } hx-trigger="load, every 2s" {}
        },
    ))
}

/// Everything on the task page that changes: state, artifacts, events, the log's tail.
async fn task_fragment(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    let home = state.home.clone();
    let got = blocking(move || {
        with_store(&home, |s| {
            let t: TaskView = tasks::get(&home, s, &id)?;
            let arts = artifacts::list(std::path::Path::new(&t.output_dir))?;
            let events = s.events_of(&t.id, 200)?;
            // The last 16 KiB, as the agent page shows: enough for the last 40 lines.
            let log = match tasks::log_path(&home, s, &t) {
                Some(p) => logs::log_range_at(&p, None, Some(16384), false)?.data,
                None => String::new(),
            };
            let log = String::from_utf8_lossy(logs::tail_lines(log.as_bytes(), 40)).into_owned();
            Ok((t, arts, events, log))
        })
    })
    .await;
    let (t, arts, events, log) = match got {
        Ok(v) => v,
        Err(e) => return error_fragment(&e),
    };
    html! {
        p { "state " b.state data-state=(t.state) { (t.state) } @if !t.reason.is_empty() { " · " span.reason { (t.reason) } } }
        p.meta {
            "attempt " (t.attempt) " · timeout " (t.timeout_text()) " · retries " (t.retries)
            @if let Some(a) = &t.agent { " · agent " a href={ "/agents/" (a) } { (a) } }
        }
        h2 { "Artifacts" }
        @if arts.is_empty() { p { "none yet" } }
        ul.artifacts { @for a in &arts {
            li { a href={ "/api/v1/tasks/" (t.id) "/artifacts/" (a.path.replace('/', "%2F")) } data-download=(a.path) { (a.path) } " (" (a.size) " bytes)" }
        } }
        h2 { "Log" }
        pre.logs { (log) }
        h2 { "Events" }
        div.scroll { table.events { @for e in events.iter().rev() {
            tr { td { (agentbox_proxy::format_utc(e.at as u64)) } td { (e.event) } td { (e.detail) } }
        } } }
    }
    .into_response()
}

async fn hitl_page() -> Response {
    page(
        "waiting for you",
        html! {
            h1 { "Waiting for you" }
            p { "Agents whose screen shows a question. The answer is typed into the agent, followed by Enter." }
            div #hitl hx-get="/ui/hitl" hx-trigger="load, every 2s" {}
        },
    )
}

async fn hitl_rows(State(state): State<Shared>, Extension(scope): Extension<Scope>) -> Response {
    let home = state.home.clone();
    match blocking(move || with_store(&home, |s| Ok(s.hitl_list(true, 200)?))).await {
        Ok(list) if list.is_empty() => html! { p.empty { "No agent is waiting." } }.into_response(),
        Ok(list) => html! {
            @for r in list.iter().map(HitlView::of) {
                section.hitl data-hitl=(r.id) {
                    h3 { "#" (r.id) " " a href={ "/agents/" (r.agent) } { (r.agent) } " · " (r.kind) }
                    pre.screen { (r.screen) }
                    p.prompt { b { (r.prompt) } }
                    @if scope == Scope::Controller {
                        form.answer hx-post={ "/ui/hitl/" (r.id) "/answer" } hx-target="closest section" hx-swap="outerHTML" {
                            @for (label, value) in choices(&r) {
                                button.choice type="submit" name="choice" value=(value) { (label) } " "
                            }
                            input name="text" placeholder="or type an answer" size="30";
                            button type="submit" { "Answer" }
                        }
                    }
                }
            }
        }
        .into_response(),
        Err(e) => error_fragment(&e),
    }
}

/// The typed answer, or the button pressed (which wins).
/// The buttons a question offers: the numbers of a numbered menu on its screen (`1. Yes`,
/// `❯ 2. No`), else Yes/No for a yes-no or confirm question.
fn choices(r: &HitlView) -> Vec<(String, String)> {
    use agentbox_core::HitlKind;
    let mut numbered: Vec<(String, String)> = Vec::new();
    for line in r.screen.lines() {
        let t = line.trim_start_matches(|c: char| c.is_whitespace() || "❯>›▶*│|".contains(c));
        let Some((num, rest)) = t.split_once(['.', ')']) else { continue };
        let ok = num.len() == 1 && num.chars().all(|c| c.is_ascii_digit()) && !rest.trim().is_empty();
        if ok && !numbered.iter().any(|(_, v)| v == num) {
            let label: String = rest.trim().chars().take(40).collect();
            numbered.push((format!("{num}. {label}"), num.to_string()));
        }
    }
    let yes_no = || vec![("Yes".to_string(), "y".to_string()), ("No".to_string(), "n".to_string())];
    match r.kind {
        HitlKind::YesNo => yes_no(),
        HitlKind::Confirm | HitlKind::Choices if numbered.len() >= 2 => numbered,
        HitlKind::Confirm => yes_no(),
        _ => Vec::new(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerForm {
    #[serde(default)]
    text: String,
    #[serde(default)]
    choice: Option<String>,
}

async fn answer_form(
    State(state): State<Shared>,
    Path(id): Path<i64>,
    Form(form): Form<AnswerForm>,
) -> Response {
    let home = state.home.clone();
    let answer = form.choice.unwrap_or(form.text);
    match blocking(move || with_store(&home, |s| session::answer_hitl(s, id, &answer, true))).await {
        Ok(r) => html! { p.answered { "Answered #" (r.id) " (" (r.agent) ")." } }.into_response(),
        Err(e) => error_fragment(&e),
    }
}
