//! `/api/health`, `/api/stats`, `/api/openapi.json`.

use agora_shared::{Envelope, Health, Stats};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;

use super::extract::ok;
use crate::error::{ApiError, Result};
use crate::openapi::ApiDoc;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/health/ready", get(ready))
        .route("/stats", get(stats))
        .route("/openapi.json", get(openapi))
}

async fn check(state: &AppState) -> Health {
    let db_ok = state.store.ping().await.is_ok();
    let draining = *state.draining.borrow();
    Health {
        status: match (db_ok, draining) {
            (false, _) => "degraded",
            (true, true) => "draining",
            (true, false) => "ok",
        }
        .to_string(),
        database: if db_ok { "ok" } else { "unreachable" }.to_string(),
        ready: db_ok && !draining,
        draining,
        backend: state.store.backend().name().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        open_access: state.config.open_access(),
    }
}

/// The health answer: 200 when `healthy`, else 503 with the health and an UNAVAILABLE error.
fn answer(health: Health, healthy: bool, why: &str) -> (StatusCode, Json<Envelope<Health>>) {
    if healthy {
        return (StatusCode::OK, Json(Envelope::ok(health)));
    }
    let error = ApiError::Unavailable(why.to_string()).body();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(Envelope {
            success: false,
            data: Some(health),
            error: Some(error),
        }),
    )
}

/// Liveness and database reachability: 503 when the database does not answer. A draining
/// server is alive (200) but not ready.
#[utoipa::path(get, path = "/api/health", tag = "system",
    responses((status = 200, body = Envelope<Health>), (status = 503, body = Envelope<Health>)))]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Envelope<Health>>) {
    let h = check(&state).await;
    let alive = h.database == "ok";
    answer(h, alive, "the database does not answer")
}

/// Readiness, for load balancers: 200 when the database answers and the server is not
/// draining, else 503.
#[utoipa::path(get, path = "/api/health/ready", tag = "system",
    responses((status = 200, body = Envelope<Health>), (status = 503, body = Envelope<Health>)))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Envelope<Health>>) {
    let h = check(&state).await;
    let (ready, why) = (
        h.ready,
        if h.draining {
            "the server is draining"
        } else {
            "the database does not answer"
        },
    );
    answer(h, ready, why)
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
