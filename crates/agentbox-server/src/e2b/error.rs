//! Errors as E2B's SDKs read them: the control plane's `{code, message}` (the HTTP status as a
//! number), and envd's Connect errors (`{code: "not_found", message}`), each with the status the
//! SDK maps to the exception it raises.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use agentbox_engine::{Error, Kind};

/// A control-plane error.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self::new(crate::extract::status_of(e.kind()), e.to_string())
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(json!({ "code": self.status.as_u16(), "message": self.message })))
            .into_response();
        // The SDK retries 502-504 and 429 unless told not to; these answers will not change.
        r.headers_mut().insert("should-retry", HeaderValue::from_static("false"));
        r
    }
}

/// An envd (Connect) error.
#[derive(Debug)]
pub struct RpcError {
    pub code: &'static str,
    pub message: String,
}

impl RpcError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    pub fn status(&self) -> StatusCode {
        match self.code {
            "invalid_argument" | "failed_precondition" | "out_of_range" => StatusCode::BAD_REQUEST,
            "unauthenticated" => StatusCode::UNAUTHORIZED,
            "permission_denied" => StatusCode::FORBIDDEN,
            "not_found" => StatusCode::NOT_FOUND,
            "already_exists" | "aborted" => StatusCode::CONFLICT,
            "resource_exhausted" => StatusCode::TOO_MANY_REQUESTS,
            "unimplemented" => StatusCode::NOT_IMPLEMENTED,
            "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            "deadline_exceeded" => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn body(&self) -> serde_json::Value {
        json!({ "code": self.code, "message": self.message })
    }
}

impl From<Error> for RpcError {
    fn from(e: Error) -> Self {
        let code = match e.kind() {
            Kind::Invalid => "invalid_argument",
            Kind::NotFound => "not_found",
            Kind::Conflict => "failed_precondition",
            Kind::Refused => "permission_denied",
            Kind::Internal => "internal",
        };
        Self::new(code, e.to_string())
    }
}

impl From<tokio::task::JoinError> for RpcError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::new("internal", e.to_string())
    }
}

impl IntoResponse for RpcError {
    fn into_response(self) -> Response {
        (self.status(), Json(self.body())).into_response()
    }
}

/// envd's answer for a sandbox that does not run (the SDK says "sandbox not running").
pub fn gone(id: &str) -> Response {
    let mut r = (
        StatusCode::BAD_GATEWAY,
        Json(json!({ "code": 502, "message": format!("sandbox {id} was not found") })),
    )
        .into_response();
    r.headers_mut().insert("should-retry", HeaderValue::from_static("false"));
    r
}
