//! Logs, and Prometheus metrics: the recorder, and the counts taken where things happen. `GET /metrics`
//! (outside `/api`) and the per-request timing are HTTP's ([`crate::http::metrics`]).
//!
//! Counted where they happen: `agora_claims_total{via}` (rest, push), `agora_offers_total`,
//! `agora_wake_latency_seconds` (work became pending → offer sent),
//! `agora_write_batch_operations` (operations in each committed write batch),
//! `agora_http_request_duration_seconds{method,route,status}`, `agora_sse_clients`,
//! `agora_mcp_tool_calls_total{tool,outcome}` (`mcp::tools`).
//! Read at scrape time from the store and the hub: `agora_tasks{state}`, `agora_jobs{state}`,
//! `agora_agents_online`, `agora_connected_agents`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: sub-millisecond wake-ups to slow long-polls.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// Operations in one write batch: 1 to `store::batch::MAX_BATCH`.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// The process's recorder, installed once (tests run many servers in one process; they share
/// it).
fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("agora_write_batch_operations".into()),
                    BATCH_BUCKETS,
                )
            })
            .map(|b| b.build_recorder())
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
        }
        handle
    })
}

/// Folds the histograms' samples recorded since the last call into their buckets. Without it
/// every sample stays in memory until `/metrics` is read, which a server nobody scrapes never
/// is (1.4 MB after 50,000 tasks, and growing); the scheduler calls it each tick.
pub fn upkeep() {
    handle().run_upkeep();
}

/// Log lines to stdout: `text`, or `json` (one object per line); `RUST_LOG` filters (default
/// `info,sqlx=warn`).
pub fn init_logs(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Installs the recorder (call before serving, so early counts are kept).
pub fn init() {
    handle();
}

/// Everything recorded so far, in the Prometheus text format.
pub fn render_text() -> String {
    handle().render()
}

pub fn claimed(via: &'static str, n: usize) {
    metrics::counter!("agora_claims_total", "via" => via).increment(n as u64);
}

pub fn offered(since_wake: std::time::Duration) {
    metrics::counter!("agora_offers_total").increment(1);
    metrics::histogram!("agora_wake_latency_seconds").record(since_wake.as_secs_f64());
}

/// A write batch of `operations` committed.
pub fn batch_committed(operations: usize) {
    metrics::histogram!("agora_write_batch_operations").record(operations as f64);
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
