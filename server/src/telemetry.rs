//! Prometheus metrics at `GET /metrics` (outside `/api`).
//!
//! Counted where they happen: `agora_claims_total{via}` (rest, push), `agora_offers_total`,
//! `agora_wake_latency_seconds` (work became pending → offer sent),
//! `agora_http_request_duration_seconds{method,route,status}`, `agora_sse_clients`.
//! Read at scrape time from the store and the hub: `agora_tasks{state}`, `agora_jobs{state}`,
//! `agora_agents_online`, `agora_connected_agents`.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::state::AppState;

/// Latency buckets in seconds: sub-millisecond wake-ups to slow long-polls.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// The process's recorder, installed once (tests run many servers in one process; they share
/// it).
fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .map(|b| b.build_recorder())
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
        }
        handle
    })
}

/// Installs the recorder (call before serving, so early counts are kept).
pub fn init() {
    handle();
}

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
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle().render(),
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

pub fn claimed(via: &'static str, n: usize) {
    metrics::counter!("agora_claims_total", "via" => via).increment(n as u64);
}

pub fn offered(since_wake: std::time::Duration) {
    metrics::counter!("agora_offers_total").increment(1);
    metrics::histogram!("agora_wake_latency_seconds").record(since_wake.as_secs_f64());
}

/// Counts an SSE client for as long as it lives.
pub struct SseClient;

impl SseClient {
    pub fn count() -> SseClient {
        metrics::gauge!("agora_sse_clients").increment(1.0);
        SseClient
    }
}

impl Drop for SseClient {
    fn drop(&mut self) {
        metrics::gauge!("agora_sse_clients").decrement(1.0);
    }
}
