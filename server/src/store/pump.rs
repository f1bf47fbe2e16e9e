//! PostgreSQL fan-out: every replica publishes events to its own WebSocket and SSE clients by
//! reading the events table in id order, woken by its own commits and by `LISTEN agora_events`
//! for the other replicas' commits. The table is the source of truth: a lost notification is
//! repaired by the next read (and a read every second as a safety net).

use std::sync::Arc;
use std::time::Duration;

use agora_shared::Event;
use sqlx::postgres::PgListener;
use sqlx::AnyPool;
use tokio::sync::{broadcast, Notify};

use super::events::read_events_after;

/// Channel name of the notifications (payload: the newest event id, and ` work` when a task
/// became pending).
pub const CHANNEL: &str = "agora_events";

/// Runs until the store closes (the task is aborted).
pub async fn run(
    reader: AnyPool,
    url: String,
    events: broadcast::Sender<Arc<Event>>,
    work_available: Arc<Notify>,
    wake: Arc<Notify>,
) {
    let mut last: i64 = read_last_id(&reader).await.unwrap_or_default();
    tokio::spawn(listen(url, work_available, wake.clone()));
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        loop {
            let page = match read_events_after(&reader, last, 1000).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "event pump read failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            };
            let full = page.len() == 1000;
            for e in page {
                last = e.id;
                let _ = events.send(Arc::new(e));
            }
            if !full {
                break;
            }
        }
    }
}

async fn read_last_id(reader: &AnyPool) -> Option<i64> {
    let row: Option<(Option<i64>,)> = sqlx::query_as("SELECT MAX(id) FROM events")
        .fetch_optional(reader)
        .await
        .ok()?;
    Some(row.and_then(|r| r.0).unwrap_or(0))
}

/// Relays notifications: other replicas' commits wake the pump, and their new pending tasks wake
/// this replica's long-polls and dispatcher.
async fn listen(url: String, work_available: Arc<Notify>, wake: Arc<Notify>) {
    loop {
        let mut listener = match PgListener::connect(&url).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN connection failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // Anything committed while we were not listening is picked up by this read.
        wake.notify_one();
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    if n.payload().ends_with(" work") {
                        work_available.notify_waiters();
                    }
                    wake.notify_one();
                }
                // The connection dropped; `try_recv` reconnects on the next call.
                Ok(None) => {
                    wake.notify_one();
                    work_available.notify_waiters();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                    break;
                }
            }
        }
    }
}
