//! `/api/health`, `/api/stats`, `/api/openapi.json`.

use agora_shared::{Envelope, Health, Stats};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;

use super::extract::ok;
use crate::error::Result;
use crate::openapi::ApiDoc;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/stats", get(stats))
        .route("/openapi.json", get(openapi))
}

/// Liveness and database reachability: 503 when the database does not answer.
#[utoipa::path(get, path = "/api/health", tag = "system",
    responses((status = 200, body = Envelope<Health>), (status = 503, body = Envelope<Health>)))]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Envelope<Health>>) {
    let db_ok = state.store.ping().await.is_ok();
    let health = Health {
        status: if db_ok { "ok" } else { "degraded" }.to_string(),
        database: if db_ok { "ok" } else { "unreachable" }.to_string(),
        backend: state.store.backend().name().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let status = if db_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Envelope {
            success: db_ok,
            data: Some(health),
            error: None,
        }),
    )
}

/// Counts of agents, jobs and tasks by state.
#[utoipa::path(get, path = "/api/stats", tag = "system", responses((status = 200, body = Envelope<Stats>)))]
pub async fn stats(State(state): State<AppState>) -> Result<Json<Envelope<Stats>>> {
    Ok(ok(state.store.stats().await?))
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "system", responses((status = 200, description = "OpenAPI 3.1 document")))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
