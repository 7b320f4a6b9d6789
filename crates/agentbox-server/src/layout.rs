//! The frame of every dashboard page: head, navigation, security headers, and the shell a page
//! opened without a credential gets.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use super::extract::ApiError;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors 'none'; \
                   form-action 'self' http://*.localhost:* https://*.localhost:*";

/// The `<head>` of every page: the vendored scripts (loaded once, kept across navigations, which
/// htmx makes in place) and the dashboard's own script, which sends the session with requests.
fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · agentbox" }
            link rel="stylesheet" href="/assets/xterm.css";
            link rel="stylesheet" href="/assets/dashboard.css";
            script src="/assets/htmx.min.js" {}
            script src="/assets/xterm.js" {}
            script src="/assets/addon-fit.js" {}
            script src="/assets/dashboard.js" defer {}
        }
    }
}

fn secure_headers(mut resp: Response) -> Response {
    resp.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    resp.headers_mut().insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub fn page(title: &str, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body hx-boost="true" {
                nav { a href="/" { b { "agentbox" } } " " a href="/" { "agents" } " " a href="/grid" { "grid" } " " a href="/tasks" { "tasks" } " " a href="/hitl" { "waiting" span hx-get="/ui/waiting" hx-trigger="load, every 3s" {} }
                      " " a href="/login" data-logout { "sign out" } }
                main { (body) }
            }
        }
    };
    secure_headers(markup.into_response())
}

/// What a page opened without a credential gets (typing its URL, reloading it): no data, only
/// the script, which fetches the page again with the session this origin keeps, or sends the
/// person to sign in.
pub fn shell() -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head("loading"))
            body data-shell { p { "Loading..." } }
        }
    };
    secure_headers(markup.into_response())
}

pub fn fragment(m: Markup) -> Response {
    m.into_response()
}

pub fn error_fragment(e: &ApiError) -> Response {
    html! { p.error role="alert" { (e.message) } }.into_response()
}
