//! `/api/health`, `/api/health/ready`, `/api/stats`, `/api/stats/series`.

use agora_shared::{Envelope, ErrorEnvelope, Health, Stats, StatsSeries, StatsSeriesQuery};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

use super::extract::{ok, AppQuery};
use crate::error::{ApiError, Result};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/health/ready", get(ready))
        .route("/stats", get(stats))
        .route("/stats/series", get(stats_series))
}

/// The health, and why the server is not ready when it is not.
async fn check(state: &AppState) -> (Health, Option<String>) {
    let failure = state.supervisor.failure();
    let db_ok = failure.is_none() && state.store.writer_answers().await;
    let draining = *state.draining.borrow();
    let (status, why) = match (&failure, db_ok, draining) {
        (Some(cause), _, _) => ("failed", Some(format!("the server is stopping: {cause}"))),
        (None, false, _) => ("degraded", Some("the database does not answer".to_string())),
        (None, true, true) => ("draining", Some("the server is draining".to_string())),
        (None, true, false) => ("ok", None),
    };
    let health = Health {
        status: status.to_string(),
        database: if db_ok { "ok" } else { "unreachable" }.to_string(),
        ready: why.is_none(),
        draining,
        backend: state.store.backend().name().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        open_access: state.config.open_access(),
        gate: state.config.gate_settings(),
    };
    (health, why)
}

/// The health answer: 200 when `healthy`, else 503 with the health and an UNAVAILABLE error.
fn answer(health: Health, why: Option<String>) -> (StatusCode, Json<Envelope<Health>>) {
    let Some(why) = why else {
        return (StatusCode::OK, Json(Envelope::ok(health)));
    };
    let error = ApiError::Unavailable(why).body();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(Envelope {
            success: false,
            data: Some(health),
            error: Some(error),
        }),
    )
}

/// Liveness: 503 when the database does not take a write (through the writer; the answer
/// stands for a second) or a vital part of the server died. A draining server is alive (200)
/// but not ready.
#[utoipa::path(get, path = "/api/health", tag = "system",
    responses((status = 200, body = Envelope<Health>), (status = 503, body = Envelope<Health>)))]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Envelope<Health>>) {
    let (h, why) = check(&state).await;
    // Draining is alive.
    let why = why.filter(|_| h.status != "draining");
    answer(h, why)
}

/// Readiness, for load balancers: 200 when the database answers, every vital part runs and
/// the server is not draining, else 503 saying which.
#[utoipa::path(get, path = "/api/health/ready", tag = "system",
    responses((status = 200, body = Envelope<Health>), (status = 503, body = Envelope<Health>)))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Envelope<Health>>) {
    let (h, why) = check(&state).await;
    answer(h, why)
}

/// Counts of agents, jobs and tasks by state.
#[utoipa::path(get, path = "/api/stats", tag = "system", responses((status = 200, body = Envelope<Stats>)))]
pub async fn stats(State(state): State<AppState>) -> Result<Json<Envelope<Stats>>> {
    Ok(ok(state.store.stats().await?))
}

/// Tasks completed and failed, the queue depth and the agents online, a point a minute over the
/// last `minutes` (the dashboard's charts). The running minute is the last point.
#[utoipa::path(get, path = "/api/stats/series", tag = "system", params(StatsSeriesQuery),
    responses((status = 200, body = Envelope<StatsSeries>), (status = 400, body = ErrorEnvelope)))]
pub async fn stats_series(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<StatsSeriesQuery>,
) -> Result<Json<Envelope<StatsSeries>>> {
    Ok(ok(state.store.stats_series(q.minutes()?).await?))
}
