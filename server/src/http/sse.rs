//! Server-sent events: `GET /api/events` (everything) and `GET /api/jobs/:id/stream` (one job).
//! Each message's `id` is the event id. A client that reconnects with `Last-Event-ID` (header)
//! or `?last_event_id=` first gets every event it missed, from the table, then live ones, with
//! no gap and no duplicate at the seam. A client that falls too far behind gets a `resync`
//! message and the stream ends; reconnecting with its last id repairs it from the table.
//!
//! Live events are written as segments (`crate::segments`): the events of a short stretch,
//! encoded and joined once, written by every reader as the same bytes. A comment line keeps an
//! idle stream open.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

use crate::frames::{self, SSE_KEEP_ALIVE};

use super::extract::{AppPath, AppQuery};
use crate::error::{ApiError, Result};
use crate::state::AppState;
use crate::store::{EventListParams, Store};

/// Messages buffered per client before it counts as slow: live ones are segments of up to
/// 64 KB (shared with the other readers), so at most 4 MB, and at least 1.6 s of the busiest
/// feed (a segment per 25 ms).
const CLIENT_BUFFER: usize = 64;
/// How long a client may leave its buffer full before it is cut off.
const SLOW_CLIENT: Duration = Duration::from_secs(5);
/// Rows per replay query.
const REPLAY_PAGE: u32 = 1000;
/// An idle stream gets a comment this often.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/events", get(stream_events))
        .route("/jobs/{id}/stream", get(stream_job))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Resume after this event id (same as the `Last-Event-ID` header; `0` replays everything).
    last_event_id: Option<i64>,
}

fn resume_point(headers: &HeaderMap, q: &StreamQuery) -> Result<Option<i64>> {
    if let Some(v) = headers.get("last-event-id") {
        let id = v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .filter(|id| *id >= 0)
            .ok_or_else(|| {
                ApiError::validation("Last-Event-ID", "must be a non-negative event id")
            })?;
        return Ok(Some(id));
    }
    match q.last_event_id {
        Some(id) if id < 0 => Err(ApiError::validation(
            "last_event_id",
            "must be a non-negative event id",
        )),
        other => Ok(other),
    }
}

type Feed = ReceiverStream<Bytes>;

/// Every event, live; with `Last-Event-ID` the missed ones first.
#[utoipa::path(get, path = "/api/events", tag = "push", params(StreamQuery),
    responses((status = 200, description = "text/event-stream of Event JSON", content_type = "text/event-stream"),
              (status = 400, body = agora_shared::ErrorEnvelope)))]
pub async fn stream_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    AppQuery(q): AppQuery<StreamQuery>,
) -> Result<Response> {
    let after = resume_point(&headers, &q)?;
    Ok(sse(start(state, None, after).await?))
}

/// One job's events; with `Last-Event-ID` the missed ones first.
#[utoipa::path(get, path = "/api/jobs/{id}/stream", tag = "push", params(("id" = Uuid, Path), StreamQuery),
    responses((status = 200, description = "text/event-stream of Event JSON", content_type = "text/event-stream"),
              (status = 400, body = agora_shared::ErrorEnvelope), (status = 404, body = agora_shared::ErrorEnvelope)))]
pub async fn stream_job(
    State(state): State<AppState>,
    AppPath(id): AppPath<Uuid>,
    headers: HeaderMap,
    AppQuery(q): AppQuery<StreamQuery>,
) -> Result<Response> {
    let after = resume_point(&headers, &q)?;
    state.store.job_get(id).await?;
    Ok(sse(start(state, Some(id), after).await?))
}

/// The response: `text/event-stream` of the feed's messages, as they come.
fn sse(feed: Feed) -> Response {
    let body = Body::from_stream(feed.map(Ok::<_, Infallible>));
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

async fn start(state: AppState, job: Option<Uuid>, after: Option<i64>) -> Result<Feed> {
    // Without a resume point the stream starts at the newest event: read its id *before*
    // subscribing and replay from there, so an event committed in between is not lost.
    let after = match after {
        Some(a) => a,
        None => state.store.event_last_id().await?,
    };
    // Subscribe before reading the table, so nothing committed in between is missed.
    let live = state.sse.subscribe();
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
    tokio::spawn(feed(
        state.store.clone(),
        state.shutdown.clone(),
        live,
        tx,
        job,
        after,
    ));
    Ok(ReceiverStream::new(rx))
}

async fn feed(
    store: Store,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    mut live: broadcast::Receiver<std::sync::Arc<crate::segments::Segment>>,
    tx: mpsc::Sender<Bytes>,
    job: Option<Uuid>,
    after: i64,
) {
    let _counted = crate::telemetry::SseClient::count();
    // The highest id already sent (or deliberately skipped), across all jobs.
    let mut last = after;
    loop {
        let page = match store
            .event_list(EventListParams {
                job_id: job,
                after: last,
                limit: REPLAY_PAGE,
                newest_first: false,
            })
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "SSE replay failed");
                return;
            }
        };
        let full = page.len() as u32 == REPLAY_PAGE;
        for e in &page {
            // A client that stops reading during the replay is told to resync, as in the live
            // part; and the replay stops with the server.
            let sent = tokio::select! {
                r = tx.send_timeout(frames::sse_event(e), SLOW_CLIENT) => r,
                _ = shutdown.changed() => return,
            };
            if sent.is_err() {
                resync(&tx, last);
                return;
            }
            last = e.id;
        }
        if !full {
            break;
        }
    }
    let mut keep_alive = tokio::time::Instant::now() + KEEP_ALIVE;
    loop {
        let received = tokio::select! {
            r = live.recv() => r,
            _ = tokio::time::sleep_until(keep_alive) => {
                keep_alive = tokio::time::Instant::now() + KEEP_ALIVE;
                // A full buffer already keeps the stream busy.
                let _ = tx.try_send(Bytes::from_static(SSE_KEEP_ALIVE));
                continue;
            }
            _ = shutdown.changed() => return,
        };
        match received {
            Ok(segment) if segment.gap => {
                resync(&tx, last);
                return;
            }
            Ok(segment) => {
                let upto = last.max(segment.last_id());
                let Some(chunk) = segment.after(last, job) else {
                    last = upto;
                    continue;
                };
                // A client that does not drain its buffer in time is told to resync rather
                // than queued for without bound.
                if tx.send_timeout(chunk, SLOW_CLIENT).await.is_err() {
                    resync(&tx, last);
                    return;
                }
                last = upto;
                keep_alive = tokio::time::Instant::now() + KEEP_ALIVE;
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                resync(&tx, last);
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Tells a client that fell behind to reconnect from `last` (the table has everything after it).
fn resync(tx: &mpsc::Sender<Bytes>, last: i64) {
    let data = serde_json::json!({ "last_event_id": last }).to_string();
    let _ = tx.try_send(frames::sse_named("resync", &data));
}
