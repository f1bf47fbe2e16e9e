//! The response envelope `{success, data, error}` and the stable error codes every client
//! matches on.

use serde::{Deserialize, Serialize};

/// Every response body: `data` on success (may be `null`, e.g. a claim with nothing to do),
/// `error` on failure.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Envelope<T> {
    pub success: bool,
    #[serde(default = "Option::default")]
    pub data: Option<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiErrorBody>,
}

impl<T> Envelope<T> {
    pub fn ok(data: T) -> Self {
        Envelope {
            success: true,
            data: Some(data),
            error: None,
        }
    }

    pub fn empty() -> Self {
        Envelope {
            success: true,
            data: None,
            error: None,
        }
    }

    pub fn err(error: ApiErrorBody) -> Self {
        Envelope {
            success: false,
            data: None,
            error: Some(error),
        }
    }
}

/// What went wrong: a stable `code` to branch on, a `message` for people, the request `field`
/// at fault when there is one, and machine-readable `details` (e.g. `next_allowed_at` on 429).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiErrorBody {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub details: Option<serde_json::Value>,
}

/// The shape of every error response (for documentation; clients decode `Envelope<T>`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorEnvelope {
    /// Always `false`.
    pub success: bool,
    /// Always `null` (present, so every answer has the same three keys).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub data: Option<serde_json::Value>,
    pub error: ApiErrorBody,
}

/// Stable error codes. Each has one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// 400: a field is missing, of the wrong type or out of range.
    ValidationError,
    /// 400: the body is not JSON.
    MalformedJson,
    /// 401: no token, or not the right one.
    Unauthorized,
    /// 403: authenticated, but not allowed (e.g. another agent's task).
    Forbidden,
    /// 403: `APPROVERS=role` and the voting agent does not hold the `approver` role.
    NotAnApprover,
    /// 403: the job's submitter voting on its job, or a planner reviewing its own plan.
    SelfApproval,
    /// 403: a browser request from a foreign origin (or a foreign `Host` on a loopback server).
    CrossOrigin,
    /// 404: unknown id or route.
    NotFound,
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 408: the request body stopped arriving (`BODY_TIMEOUT_SECS` between reads).
    RequestTimeout,
    /// 409: the job or task is not in a state that allows this.
    InvalidState,
    /// 409: it exists already (e.g. a second approval by the same agent).
    Conflict,
    /// 409: the report names a lease (delivery) of the task that has ended; drop the work.
    LeaseLost,
    /// 409: this `idempotency_key` created a job from a different body.
    IdempotencyConflict,
    /// 413: the body is larger than `MAX_BODY_BYTES`.
    PayloadTooLarge,
    /// 422: well-formed but unusable (e.g. a plan without `task_specs`).
    InvalidPlan,
    /// 429: too soon; `details.next_allowed_at` says when.
    RateLimited,
    /// 503: shutting down or the database is unreachable.
    Unavailable,
    /// 500: a bug or an outage; the server logged the cause.
    InternalError,
}

impl ErrorCode {
    /// The code as it is written on the wire (`RATE_LIMITED`).
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ValidationError => "VALIDATION_ERROR",
            ErrorCode::MalformedJson => "MALFORMED_JSON",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotAnApprover => "NOT_AN_APPROVER",
            ErrorCode::SelfApproval => "SELF_APPROVAL",
            ErrorCode::CrossOrigin => "CROSS_ORIGIN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::RequestTimeout => "REQUEST_TIMEOUT",
            ErrorCode::InvalidState => "INVALID_STATE",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::LeaseLost => "LEASE_LOST",
            ErrorCode::IdempotencyConflict => "IDEMPOTENCY_CONFLICT",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::InvalidPlan => "INVALID_PLAN",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::InternalError => "INTERNAL_ERROR",
        }
    }

    /// The HTTP status that goes with the code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::ValidationError | ErrorCode::MalformedJson => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden
            | ErrorCode::NotAnApprover
            | ErrorCode::SelfApproval
            | ErrorCode::CrossOrigin => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::InvalidState
            | ErrorCode::Conflict
            | ErrorCode::LeaseLost
            | ErrorCode::IdempotencyConflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::InvalidPlan => 422,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::InternalError => 500,
        }
    }
}

/// A page of a list: `items` from `offset`, and how many match in all.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
    pub limit: u32,
    pub offset: u64,
}

/// Default and largest page sizes.
pub const DEFAULT_PAGE_LIMIT: u32 = 50;
pub const MAX_PAGE_LIMIT: u32 = 1000;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn success_keeps_null_data() {
        let e: Envelope<u32> = Envelope::empty();
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"success": true, "data": null})
        );
    }

    #[test]
    fn error_shape() {
        let e: Envelope<u32> = Envelope::err(ApiErrorBody {
            code: ErrorCode::RateLimited,
            message: "later".into(),
            field: None,
            details: Some(json!({"next_allowed_at": "2026-01-01T00:00:00Z"})),
        });
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["error"]["code"], "RATE_LIMITED");
        assert_eq!(v["success"], false);
        let back: Envelope<u32> = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn codes_have_client_error_statuses() {
        assert_eq!(ErrorCode::InvalidPlan.http_status(), 422);
        assert_eq!(ErrorCode::PayloadTooLarge.http_status(), 413);
        assert_eq!(ErrorCode::SelfApproval.http_status(), 403);
        assert_eq!(
            serde_json::to_value(ErrorCode::NotAnApprover).unwrap(),
            "NOT_AN_APPROVER"
        );
        assert_eq!(
            serde_json::to_value(ErrorCode::InvalidState).unwrap(),
            "INVALID_STATE"
        );
    }

    #[test]
    fn as_str_is_the_wire_name() {
        use ErrorCode::*;
        for code in [
            ValidationError,
            MalformedJson,
            Unauthorized,
            Forbidden,
            NotAnApprover,
            SelfApproval,
            CrossOrigin,
            NotFound,
            MethodNotAllowed,
            RequestTimeout,
            InvalidState,
            Conflict,
            LeaseLost,
            IdempotencyConflict,
            PayloadTooLarge,
            InvalidPlan,
            RateLimited,
            Unavailable,
            InternalError,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }
}
