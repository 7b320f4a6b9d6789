//! The dashboard's bulk actions: stop, pause, resume, kill, restart or remove every agent ticked in the list,
//! each on its own (one failing does not stop the rest), with one line of outcome per agent.

use std::time::Duration;

use axum::extract::{Form, State};
use axum::response::Response;
use maud::html;

use super::layout::fragment;
use super::state::Shared;
use super::store::with_store;
use agentbox_engine::lifecycle;

/// The grace a stop gives (as `agentbox stop` does by default).
const GRACE: Duration = Duration::from_secs(10);

/// What a bulk action does to one agent; the outcome's words.
fn act(state: &Shared, action: &str, name: &str) -> agentbox_engine::Result<&'static str> {
    let home = &state.home;
    with_store(home, |s| match action {
        "stop" => match lifecycle::ask_to_stop(s, name, GRACE)? {
            lifecycle::StopAsked::Ended(_) => Ok("stopped"),
            lifecycle::StopAsked::Asked(rec) => {
                // The grace, then the kill, go on without holding the answer.
                let home = home.clone();
                std::thread::spawn(move || with_store(&home, |s| lifecycle::end_stop(&home, s, &rec, GRACE)));
                Ok("stopping")
            }
        },
        "pause" => agentbox_engine::pause::pause(home, s, name).map(|_| "paused"),
        "resume" => agentbox_engine::pause::resume(home, s, name).map(|_| "resumed"),
        "kill" => lifecycle::kill(home, s, name).map(|_| "killed"),
        "restart" => lifecycle::restart(home, s, name).map(|_| "restarted"),
        "remove" => lifecycle::remove(home, s, name, false).map(|()| "removed"),
        other => Err(agentbox_engine::Error::invalid(format!(
            "unknown action '{other}': use stop, pause, resume, kill, restart or remove"
        ))),
    })
}

/// `action=stop|kill|restart|remove` and `sel=NAME`, once per ticked agent.
pub async fn bulk_form(State(state): State<Shared>, Form(fields): Form<Vec<(String, String)>>) -> Response {
    let action = fields.iter().find(|(k, _)| k == "action").map(|(_, v)| v.clone()).unwrap_or_default();
    let names: Vec<String> = fields.into_iter().filter(|(k, _)| k == "sel").map(|(_, v)| v).collect();
    let worker = state.clone();
    let outcomes = tokio::task::spawn_blocking(move || {
        names.into_iter().map(|n| (act(&worker, &action, &n), n)).collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    state.refresh().await;
    fragment(html! {
        @if outcomes.is_empty() { p.error role="alert" { "Tick the agents to act on first." } }
        @else {
            ul.bulk-outcomes {
                @for (outcome, name) in &outcomes {
                    @match outcome {
                        Ok(done) => li data-agent=(name) { (name) ": " (done) },
                        Err(e) => li.error data-agent=(name) role="alert" { (name) ": " (e) },
                    }
                }
            }
        }
    })
}
