//! The dashboard's workspace panel on an agent's page: what the agent changed (the diff, shown
//! before any apply), apply and undo, and its checkpoints with rollback and fork.

use axum::extract::{Form, Path, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use maud::html;
use serde::Deserialize;

use super::auth::Scope;
use super::extract::blocking;
use super::layout::{error_fragment, fragment};
use super::state::Shared;
use super::store::with_store;
use agentbox_engine::workspace::apply::{self, Applied, ApplyRequest};
use agentbox_engine::workspace::checkpoint;

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/ui/agents/{name}/workspace", get(panel))
        .route("/ui/agents/{name}/apply", post(apply_form))
        .route("/ui/agents/{name}/apply-undo", post(undo_form))
        .route("/ui/agents/{name}/checkpoint", post(checkpoint_form))
        .route("/ui/agents/{name}/rollback/{id}", post(rollback_form))
        .route("/ui/agents/{name}/fork", post(fork_form))
        .route("/ui/agents/{name}/ports", get(ports_panel))
}

/// The ports the agent listens on, each opened (by a controller) in a tab on its own origin:
/// the page's script asks for a ticket and posts it there (see `ports.rs`).
async fn ports_panel(
    State(state): State<Shared>,
    Path(name): Path<String>,
    Extension(scope): Extension<Scope>,
) -> Response {
    let home = state.home.clone();
    let n = name.clone();
    let ports = match blocking(move || with_store(&home, |s| agentbox_engine::ports::listening(s, &n))).await
    {
        Ok(p) => p,
        Err(e) => return error_fragment(&e),
    };
    let controller = scope == Scope::Controller;
    fragment(html! {
        @if ports.is_empty() { p.meta { "Listening on no TCP port." } }
        ul.ports {
            @for port in &ports {
                li data-port=(port) {
                    code { (port) }
                    @if controller {
                        " " button type="button" data-open-port=(port) data-agent=(name) { "Open" }
                    }
                }
            }
        }
        @if controller {
            form.inline data-open-port-form data-agent=(name) {
                input name="port" type="number" min="1" max="65535" placeholder="another port" size="8";
                button type="submit" { "Open" }
            }
        }
    })
}

/// The panel: changes (the diff an apply would write), then checkpoints.
async fn panel(
    State(state): State<Shared>,
    Path(name): Path<String>,
    Extension(scope): Extension<Scope>,
) -> Response {
    let home = state.home.clone();
    let n = name.clone();
    let found = blocking(move || {
        with_store(&home, |s| {
            let changes = agentbox_engine::diff::changes_of(s, &n);
            Ok((changes, checkpoint::list(s, &n)?))
        })
    })
    .await;
    let (changes, checkpoints) = match found {
        Ok(f) => f,
        Err(e) => return error_fragment(&e),
    };
    let controller = scope == Scope::Controller;
    let base = format!("/ui/agents/{name}");
    fragment(html! {
        h3 { "Changes" }
        @match &changes {
            Err(e) => p.meta { (e.to_string()) },
            Ok(list) if list.is_empty() => p.meta { "No changes since spawn." },
            Ok(list) => {
                ul.changes {
                    @for c in list {
                        li data-change=(c.change) {
                            code { (c.change) } " "
                            @if let Some(from) = &c.from { (from.display()) " → " }
                            (c.path.display())
                        }
                    }
                }
                @if controller {
                    form.apply hx-post={ (base) "/apply" } hx-target="#apply-result" {
                        label { input type="checkbox" name="force" value="true"; " overwrite paths changed there since the agent started" }
                        " "
                        button type="submit" hx-confirm="Write these changes into the directory the agent was spawned from?" { "Apply" }
                    }
                }
            }
        }
        @if controller {
            button hx-post={ (base) "/apply-undo" } hx-target="#apply-result" { "Undo last apply" }
        }
        div #apply-result {}
        h3 { "Checkpoints" }
        @if checkpoints.is_empty() { p.meta { "None yet." } }
        @else {
            table.checkpoints {
                thead { tr { th { "id" } th { "age" } th { "message" } th { "written" } @if controller { th {} } } }
                tbody {
                    @for k in &checkpoints {
                        tr data-checkpoint=(k.id) {
                            td { (k.id) }
                            td { (agentbox_engine::agents::age(k.created_ms)) }
                            td { (k.message) }
                            td { (k.bytes.div_ceil(1024)) " KiB" }
                            @if controller {
                                td {
                                    button hx-post={ (base) "/rollback/" (k.id) } hx-target="#checkpoint-result"
                                        hx-confirm={ "Roll " (name) " back to checkpoint " (k.id) "? Its changes since are lost." } { "Rollback" }
                                    " "
                                    form.inline hx-post={ (base) "/fork" } hx-target="#checkpoint-result" {
                                        input type="hidden" name="at" value=(k.id);
                                        input name="name" placeholder="new agent" size="12" required;
                                        button type="submit" { "Fork" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if controller {
            form.checkpoint hx-post={ (base) "/checkpoint" } hx-target="#workspace" {
                input name="message" placeholder="what this state is" size="30";
                button type="submit" { "Checkpoint" }
            }
        }
        div #checkpoint-result {}
    })
}

fn outcome(done: &Applied, undo: bool) -> Response {
    let verb = match (undo, done.dry_run) {
        (true, _) => "undone in",
        (false, true) => "would be written to",
        (false, false) => "written to",
    };
    fragment(html! {
        p { (done.changes.len()) " path(s) " (verb) " " code { (done.target.display()) } }
        @for s in &done.skipped { p.error { "skipped " (s.path.display()) ": " (s.reason) } }
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyForm {
    #[serde(default)]
    force: Option<String>,
}

async fn apply_form(
    State(state): State<Shared>,
    Path(name): Path<String>,
    Form(f): Form<ApplyForm>,
) -> Response {
    let home = state.home.clone();
    let req = ApplyRequest { force: f.force.is_some(), ..Default::default() };
    match blocking(move || with_store(&home, |s| apply::apply(&home, s, &name, &req))).await {
        Ok(done) => outcome(&done, false),
        Err(e) => error_fragment(&e),
    }
}

async fn undo_form(State(state): State<Shared>, Path(name): Path<String>) -> Response {
    let home = state.home.clone();
    match blocking(move || with_store(&home, |s| apply::undo(&home, s, &name, false))).await {
        Ok(done) => outcome(&done, true),
        Err(e) => error_fragment(&e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointForm {
    #[serde(default)]
    message: String,
}

async fn checkpoint_form(
    State(state): State<Shared>,
    Path(name): Path<String>,
    scope: Extension<Scope>,
    Form(f): Form<CheckpointForm>,
) -> Response {
    let home = state.home.clone();
    let n = name.clone();
    match blocking(move || with_store(&home, |s| checkpoint::create(&home, s, &n, &f.message))).await {
        Ok(_) => panel(State(state), Path(name), scope).await,
        Err(e) => error_fragment(&e),
    }
}

async fn rollback_form(State(state): State<Shared>, Path((name, id)): Path<(String, String)>) -> Response {
    let home = state.home.clone();
    match blocking(move || with_store(&home, |s| checkpoint::rollback(&home, s, &name, &id))).await {
        Ok(rec) => {
            state.refresh().await;
            fragment(html! { p { (rec.name) " rolled back; it is " (rec.state) "." } })
        }
        Err(e) => error_fragment(&e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForkForm {
    name: String,
    #[serde(default)]
    at: Option<String>,
}

async fn fork_form(
    State(state): State<Shared>,
    Path(name): Path<String>,
    Form(f): Form<ForkForm>,
) -> Response {
    let home = state.home.clone();
    let at = f.at.filter(|a| !a.is_empty());
    let made = blocking(move || {
        with_store(&home, |s| {
            agentbox_engine::lifecycle::fork(&home, s, &name, &f.name, at.as_deref(), false)
        })
    })
    .await;
    match made {
        Ok(rec) => {
            state.refresh().await;
            let mut r = html! { p { "Forked " (rec.name) "." } }.into_response();
            if let Ok(loc) = HeaderValue::from_str(&format!("/agents/{}", rec.name)) {
                r.headers_mut().insert("hx-redirect", loc);
            }
            r
        }
        Err(e) => error_fragment(&e),
    }
}
