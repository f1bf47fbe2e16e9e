//! Server-sent events: `GET /api/events` (everything) and `GET /api/jobs/:id/stream` (one job).
//! Each message's `id` is the event id. A client that reconnects with `Last-Event-ID` (header)
//! or `?last_event_id=` first gets every event it missed, from the table, then live ones, with
//! no gap and no duplicate at the seam. A client that falls too far behind gets a `resync`
//! message and the stream ends; reconnecting with its last id repairs it from the table.
//!
//! Live events are written as segments (`crate::segments`): the events of a short stretch,
//! encoded and joined once, written by every reader as the same bytes, straight from the
//! segments' broadcast by the connection's own task. A comment line keeps an idle stream open.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::frames::{self, SSE_KEEP_ALIVE};

use super::extract::{AppPath, AppQuery};
use crate::error::{ApiError, Result};
use crate::state::AppState;
use crate::store::{EventListParams, Store};

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

/// The response: `text/event-stream` of the reader's messages, as the connection asks for them.
fn sse(reader: Reader) -> Response {
    let feed = futures::stream::unfold(reader, |mut r| async move {
        let next = r.next().await?;
        Some((Ok::<_, Infallible>(next), r))
    });
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::from_stream(feed),
    )
        .into_response()
}

async fn start(state: AppState, job: Option<Uuid>, after: Option<i64>) -> Result<Reader> {
    // Without a resume point the stream starts at the newest event: read its id *before*
    // subscribing and replay from there, so an event committed in between is not lost.
    let after = match after {
        Some(a) => a,
        None => state.store.event_last_id().await?,
    };
    // Subscribe before reading the table, so nothing committed in between is missed.
    let live = state.sse.subscribe();
    Ok(Reader {
        store: state.store.clone(),
        shutdown: state.shutdown.clone(),
        live,
        job,
        last: after,
        replaying: true,
        keep_alive: tokio::time::Instant::now() + KEEP_ALIVE,
        ended: false,
        _counted: crate::telemetry::SseClient::count(),
    })
}

/// One SSE reader: what it has been sent, and where the next comes from. It is the response
/// body itself, read by the connection's own task when its socket can take more (no task or
/// queue of its own between the live segments and the socket): a reader that does not read
/// costs nothing but its place in the segments' broadcast, and when it has fallen
/// [`crate::segments`]' buffer behind it is told to resync.
struct Reader {
    store: Store,
    shutdown: tokio::sync::watch::Receiver<bool>,
    live: broadcast::Receiver<std::sync::Arc<crate::segments::Segment>>,
    job: Option<Uuid>,
    /// The highest id already sent (or deliberately skipped), across all jobs.
    last: i64,
    /// Still reading the table for what was committed after the resume point.
    replaying: bool,
    keep_alive: tokio::time::Instant,
    /// Told to resync: nothing more.
    ended: bool,
    _counted: crate::telemetry::SseClient,
}

impl Reader {
    /// The next bytes to write; `None` ends the stream.
    async fn next(&mut self) -> Option<Bytes> {
        if self.ended {
            return None;
        }
        if self.replaying {
            match self.replay_page().await {
                Ok(Some(page)) => return Some(page),
                Ok(None) => self.replaying = false,
                Err(()) => return None,
            }
        }
        loop {
            let received = tokio::select! {
                r = self.live.recv() => r,
                _ = tokio::time::sleep_until(self.keep_alive) => {
                    self.keep_alive = tokio::time::Instant::now() + KEEP_ALIVE;
                    return Some(Bytes::from_static(SSE_KEEP_ALIVE));
                }
                _ = self.shutdown.changed() => return None,
            };
            match received {
                Ok(segment) if segment.gap => return Some(self.resync()),
                Ok(segment) => {
                    let upto = self.last.max(segment.last_id());
                    let chunk = segment.after(self.last, self.job);
                    self.last = upto;
                    if let Some(chunk) = chunk {
                        self.keep_alive = tokio::time::Instant::now() + KEEP_ALIVE;
                        return Some(chunk);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => return Some(self.resync()),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next page of missed events from the table, as one chunk; `Ok(None)` when there
    /// is no more, `Err` when the stream must end (the store failed, the server stops).
    async fn replay_page(&mut self) -> std::result::Result<Option<Bytes>, ()> {
        let read = self.store.event_list(EventListParams {
            job_id: self.job,
            after: self.last,
            limit: REPLAY_PAGE,
            newest_first: false,
        });
        let page = tokio::select! {
            r = read => r,
            _ = self.shutdown.changed() => return Err(()),
        };
        let page = page.map_err(|e| tracing::warn!(error = %e, "SSE replay failed"))?;
        let Some(newest) = page.last() else {
            return Ok(None);
        };
        self.last = newest.id;
        if (page.len() as u32) < REPLAY_PAGE {
            self.replaying = false;
        }
        let mut chunk = Vec::new();
        for e in &page {
            chunk.extend_from_slice(&frames::sse_event(e));
        }
        Ok(Some(Bytes::from(chunk)))
    }

    /// Tells a reader that fell behind to reconnect from its last id (the table has everything
    /// after it); the stream ends after this message.
    fn resync(&mut self) -> Bytes {
        self.ended = true;
        let data = serde_json::json!({ "last_event_id": self.last }).to_string();
        frames::sse_named("resync", &data)
    }
}
