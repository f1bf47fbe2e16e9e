//! Extractors that turn every malformed request into our error envelope: JSON bodies (whatever
//! the Content-Type, so `curl -d` works), path ids and query strings, naming the field at fault.

use agora_shared::Envelope;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ApiError;
use crate::json::field_of;
pub use crate::json::parse_json;
use crate::state::AppState;

/// A JSON body, required.
pub struct AppJson<T>(pub T);

/// A JSON body that may be left out (empty body → `T::default()`).
pub struct OptionalJson<T>(pub T);

/// The body parsed as JSON, or `None` when it is empty (or only white space).
async fn json_body<T: DeserializeOwned>(
    req: Request,
    state: &AppState,
) -> Result<Option<T>, ApiError> {
    let bytes = Bytes::from_request(req, state)
        .await
        .map_err(|r: BytesRejection| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(state.config.body_limit())
            } else if timed_out(&r) {
                ApiError::BodyTimeout(state.config.body_timeout())
            } else {
                ApiError::MalformedJson(r.body_text())
            }
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    parse_json(&bytes).map(Some)
}

/// Whether reading the body failed because it stopped arriving (`BODY_TIMEOUT_SECS`).
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

impl<T: DeserializeOwned> FromRequest<AppState> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        json_body(req, state)
            .await?
            .map(AppJson)
            .ok_or_else(|| ApiError::MalformedJson("the body is empty; send a JSON object".into()))
    }
}

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(OptionalJson(
            json_body(req, state).await?.unwrap_or_default(),
        ))
    }
}

/// Path parameters; a bad id is a 400 naming the parameter.
pub struct AppPath<T>(pub T);

impl<T, S> FromRequestParts<S> for AppPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(AppPath(v)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                use axum::extract::path::ErrorKind;
                Err(match e.kind() {
                    ErrorKind::ParseErrorAtKey { key, value, .. } => {
                        ApiError::validation(key, format!("must be a UUID, got '{value}'"))
                    }
                    ErrorKind::DeserializeError { key, value, .. } => {
                        ApiError::validation(key, format!("must be a UUID, got '{value}'"))
                    }
                    ErrorKind::ParseError { value, .. } => {
                        ApiError::validation("id", format!("must be a UUID, got '{value}'"))
                    }
                    _ => ApiError::validation("path", e.body_text()),
                })
            }
            Err(other) => Err(ApiError::validation("path", other.body_text())),
        }
    }
}

/// Query parameters; a bad one is a 400 naming it.
pub struct AppQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for AppQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(AppQuery)
            .map_err(|e| {
                let path = e.path().to_string();
                let message = e.into_inner().to_string();
                ApiError::validation(&field_of(&path, &message), message)
            })
    }
}

/// A success envelope.
pub fn ok<T: Serialize>(data: T) -> Json<Envelope<T>> {
    Json(Envelope::ok(data))
}

/// A success envelope with 201 Created.
pub fn created<T: Serialize>(data: T) -> (StatusCode, Json<Envelope<T>>) {
    (StatusCode::CREATED, Json(Envelope::ok(data)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_shared::{ErrorCode, SubmitJob};

    fn err(body: &str) -> agora_shared::ApiErrorBody {
        parse_json::<SubmitJob>(body.as_bytes())
            .err()
            .map(|e| e.body())
            .unwrap()
    }

    #[test]
    fn names_the_field() {
        let e = err(r#"{"job_spec": {}}"#);
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::ValidationError, Some("title"))
        );
        let e = err(r#"{"title": "t", "job_spec": 1, "priority": "high"}"#);
        assert_eq!(e.field.as_deref(), Some("priority"));
        let e = err(r#"{"title": "t", "job_spec": 1, "colour": 1}"#);
        assert_eq!(e.field.as_deref(), Some("colour"));
        assert_eq!(err(r#"{"title": "#).code, ErrorCode::MalformedJson);
        assert_eq!(
            err(r#"{"title": "t", "job_spec": 1} x"#).code,
            ErrorCode::MalformedJson
        );
        assert_eq!(err("[]").code, ErrorCode::ValidationError);
    }
}
