//! The one error type of the server, and the one place it becomes an HTTP response
//! (`{success:false, error:{code, message, field?, details?}}` with the matching status).
//! Internal causes are logged, never sent to the client.

use agora_shared::{ApiErrorBody, Envelope, ErrorCode, FieldError, LeaseLost, PlanError, TooLarge};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};

use crate::store::StoreError;

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Validation(FieldError),
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    CrossOrigin(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    InvalidState(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    LeaseLost(#[from] LeaseLost),
    #[error("{0}")]
    IdempotencyConflict(String),
    #[error("the request body stopped arriving for {} s", .0.as_secs_f64())]
    BodyTimeout(std::time::Duration),
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    FieldTooLarge(#[from] TooLarge),
    #[error("{0}")]
    InvalidPlan(#[from] PlanError),
    #[error("{0}")]
    VoteRefused(#[from] agora_shared::VoteRefused),
    #[error("this agent may approve again at {next_allowed_at}")]
    RateLimited { next_allowed_at: DateTime<Utc> },
    #[error("too many {what}: retry in {} s", retry_after.as_secs())]
    Throttled {
        what: &'static str,
        retry_after: std::time::Duration,
    },
    #[error("{0}")]
    Unavailable(String),
    #[error("database error")]
    Database(crate::store::db::DbError),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn not_found(what: &str, id: impl std::fmt::Display) -> Self {
        ApiError::NotFound(format!("{what} {id} does not exist"))
    }

    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        ApiError::Validation(FieldError::new(field, message))
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Validation(_) => ErrorCode::ValidationError,
            ApiError::MalformedJson(_) => ErrorCode::MalformedJson,
            ApiError::Unauthorized(_) => ErrorCode::Unauthorized,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::CrossOrigin(_) => ErrorCode::CrossOrigin,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            ApiError::BodyTimeout(_) => ErrorCode::RequestTimeout,
            ApiError::InvalidState(_) => ErrorCode::InvalidState,
            ApiError::Conflict(_) => ErrorCode::Conflict,
            ApiError::LeaseLost(_) => ErrorCode::LeaseLost,
            ApiError::IdempotencyConflict(_) => ErrorCode::IdempotencyConflict,
            ApiError::PayloadTooLarge(_) | ApiError::FieldTooLarge(_) => ErrorCode::PayloadTooLarge,
            ApiError::InvalidPlan(_) => ErrorCode::InvalidPlan,
            ApiError::VoteRefused(agora_shared::VoteRefused::NotAnApprover(_)) => {
                ErrorCode::NotAnApprover
            }
            ApiError::VoteRefused(agora_shared::VoteRefused::SelfApproval(_)) => {
                ErrorCode::SelfApproval
            }
            ApiError::RateLimited { .. } | ApiError::Throttled { .. } => ErrorCode::RateLimited,
            ApiError::Unavailable(_) => ErrorCode::Unavailable,
            ApiError::Database(_) | ApiError::Internal(_) => ErrorCode::InternalError,
        }
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The body sent to the client: never the text of an internal cause.
    pub fn body(&self) -> ApiErrorBody {
        let (message, field, details) = match self {
            ApiError::Validation(e) => (e.to_string(), Some(e.field.clone()), None),
            ApiError::InvalidPlan(e) => (e.to_string(), e.field(), None),
            ApiError::IdempotencyConflict(m) => {
                (m.clone(), Some("idempotency_key".to_string()), None)
            }
            ApiError::FieldTooLarge(e) => (
                e.to_string(),
                Some(e.field.clone()),
                Some(serde_json::json!({ "size": e.size, "max": e.max })),
            ),
            ApiError::RateLimited { next_allowed_at } => (
                self.to_string(),
                None,
                Some(serde_json::json!({ "next_allowed_at": next_allowed_at })),
            ),
            ApiError::Throttled { retry_after, .. } => (
                self.to_string(),
                None,
                Some(serde_json::json!({ "retry_after_secs": retry_after.as_secs() })),
            ),
            ApiError::Database(_) | ApiError::Internal(_) => (
                "internal error; the server logged the cause".to_string(),
                None,
                None,
            ),
            other => (other.to_string(), None, None),
        };
        ApiErrorBody {
            code: self.code(),
            message,
            field,
            details,
        }
    }
}

/// The store's answers in HTTP: the one place they are translated.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            StoreError::Forbidden(m) => ApiError::Forbidden(m),
            StoreError::InvalidState(m) => ApiError::InvalidState(m),
            StoreError::Conflict(m) => ApiError::Conflict(m),
            StoreError::LeaseLost(l) => ApiError::LeaseLost(l),
            StoreError::IdempotencyConflict(m) => ApiError::IdempotencyConflict(m),
            StoreError::InvalidPlan(p) => ApiError::InvalidPlan(p),
            StoreError::Invalid(f) => ApiError::Validation(f),
            StoreError::Refused(r) => ApiError::VoteRefused(r),
            StoreError::Cooldown(next_allowed_at) => ApiError::RateLimited { next_allowed_at },
            StoreError::Unavailable(m) => ApiError::Unavailable(m),
            StoreError::Database(d) => ApiError::Database(d),
            StoreError::Internal(i) => ApiError::Internal(i),
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::Validation(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Database(e) => tracing::error!(error = ?e, "database error"),
            ApiError::Internal(e) => tracing::error!(error = ?e, "internal error"),
            _ => {}
        }
        let status = self.status_code();
        let retry_after = match &self {
            ApiError::Throttled { retry_after, .. } => Some(retry_after.as_secs().max(1)),
            ApiError::RateLimited { next_allowed_at } => Some(
                u64::try_from((*next_allowed_at - Utc::now()).num_seconds())
                    .unwrap_or(0)
                    .max(1),
            ),
            _ => None,
        };
        let mut res = (status, Json(Envelope::<()>::err(self.body()))).into_response();
        if let Some(secs) = retry_after {
            res.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        res
    }
}
