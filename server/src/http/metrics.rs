//! `GET /metrics` (outside `/api`): the Prometheus text format, with the gauges read from the
//! store and the hub at scrape time; and the timing of every request by its route template.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// `GET /metrics`: the Prometheus text format.
pub async fn render(State(state): State<AppState>) -> Response {
    if let Ok(stats) = state.store.stats().await {
        // Every state, zero included: a state that emptied must not keep its last count.
        for s in agora_shared::TaskStatus::ALL {
            let n = stats.tasks.get(s.as_str()).copied().unwrap_or(0);
            metrics::gauge!("agora_tasks", "state" => s.as_str()).set(n as f64);
        }
        for s in agora_shared::JobStatus::ALL {
            let n = stats.jobs.get(s.as_str()).copied().unwrap_or(0);
            metrics::gauge!("agora_jobs", "state" => s.as_str()).set(n as f64);
        }
        metrics::gauge!("agora_agents_online").set(stats.agents_online as f64);
    }
    metrics::gauge!("agora_connected_agents").set(state.hub.connected_agents().len() as f64);
    // 1 on the one replica that writes the git history (see `store::leadership`).
    let writing = state.git.as_ref().is_some_and(|g| g.writing());
    metrics::gauge!("agora_git_writer").set(f64::from(u8::from(writing)));
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::render_text(),
    )
        .into_response()
}

/// Times every request by its route template (`/api/jobs/{id}`, not the id).
pub async fn track_http(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = method_label(req.method());
    let started = Instant::now();
    let res = next.run(req).await;
    metrics::histogram!(
        "agora_http_request_duration_seconds",
        "method" => method,
        "route" => route,
        "status" => res.status().as_u16().to_string(),
    )
    .record(started.elapsed().as_secs_f64());
    res
}

/// The method as a label: the standard ones by name, anything else `OTHER`, so that requests
/// with made-up methods cannot grow the label set without bound.
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}
