//! The REST API, decoded into the `agora-shared` types.

use agora_shared::{Envelope, ErrorCode};
use gloo_net::http::{Request, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// What a failed call tells the user.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiFailure {
    pub status: u16,
    pub code: Option<ErrorCode>,
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(code) => write!(f, "{} ({:?})", self.message, code),
            None => write!(f, "{}", self.message),
        }
    }
}

fn network(e: gloo_net::Error) -> ApiFailure {
    ApiFailure {
        status: 0,
        code: None,
        message: format!("the server did not answer: {e}"),
    }
}

async fn decode<T: DeserializeOwned>(res: Response) -> Result<T, ApiFailure> {
    let status = res.status();
    let env: Envelope<T> = res.json().await.map_err(|e| ApiFailure {
        status,
        code: None,
        message: format!("unexpected answer ({status}): {e}"),
    })?;
    match (env.error, env.data) {
        (Some(e), _) => Err(ApiFailure {
            status,
            code: Some(e.code),
            message: e.message,
        }),
        (None, Some(data)) => Ok(data),
        (None, None) => Err(ApiFailure {
            status,
            code: None,
            message: "the answer has no data".into(),
        }),
    }
}

/// `GET /api{path}`.
pub async fn get<T: DeserializeOwned>(path: &str) -> Result<T, ApiFailure> {
    let res = Request::get(&format!("/api{path}"))
        .send()
        .await
        .map_err(network)?;
    decode(res).await
}

/// `POST /api{path}` with a JSON body, and a bearer token when given.
pub async fn post<T: DeserializeOwned>(
    path: &str,
    body: &impl Serialize,
    token: Option<&str>,
) -> Result<T, ApiFailure> {
    let mut req: RequestBuilder = Request::post(&format!("/api{path}"));
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let res = req
        .json(body)
        .map_err(network)?
        .send()
        .await
        .map_err(network)?;
    decode(res).await
}
