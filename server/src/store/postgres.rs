//! The PostgreSQL store, for several replicas on one database. Writes: each replica's writer
//! task runs the queued operations in batches, one transaction each (group commit, see
//! `batch::run_batch`); row locks, `SKIP LOCKED` and the claims lock do the serialising.
//! Events: every replica publishes to its own WebSocket and SSE clients by reading the events
//! table in id order (the pump), woken by its own commits and by `LISTEN agora_events` for the
//! other replicas' commits. The table is the source of truth: a lost notification is repaired
//! by the next read (and a read every second as a safety net).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::postgres::PgListener;
use sqlx::AnyPool;
use tokio::sync::{broadcast, mpsc, Notify};

use super::batch::{next_batch, run_batch, QUEUE};
use super::clock::Clock;
use super::db::Counted;
use super::events::read_events_after;
use super::writer::{Msg, Publisher, Seen, WriteCtx, WriterHandle};
use super::{Backend, Opened, QueueRules};

/// Connects, runs the migrations and starts the pump. `publisher.pump` is the pump's wake-up.
pub(super) async fn open(
    url: &str,
    options: AnyConnectOptions,
    publisher: Publisher,
    rules: QueueRules,
    clock: Clock,
) -> anyhow::Result<Opened> {
    let pool = AnyPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .context("connecting to PostgreSQL")?;
    sqlx::migrate!("migrations/postgres")
        .run(&pool)
        .await
        .context("running the PostgreSQL migrations")?;
    let wake = publisher.pump.clone().unwrap_or_default();
    // Where publishing starts, read before the store is handed out: an event committed by the
    // first caller is after it, so it is published (read later, it could be skipped).
    let last = read_last_id(&pool)
        .await
        .context("reading the newest event id")?;
    let run = pump(
        pool.clone(),
        last,
        url.to_string(),
        publisher.events.clone(),
        publisher.work_available.clone(),
        wake,
    );
    let (task, ended) = crate::supervise::spawn_reporting(run);
    let (queue, rx) = mpsc::channel(QUEUE);
    let (_, writer_ended) =
        crate::supervise::spawn_reporting(run_writer(pool.clone(), rx, publisher, rules, clock));
    let writer = WriterHandle {
        queue,
        ended: writer_ended,
    };
    Ok(Opened {
        backend: Backend::Postgres,
        reader: pool,
        writer,
        pump: Some((task, ended)),
        lock: None,
    })
}

/// The replica's writer: takes every queued operation (up to `batch::MAX_BATCH`) and runs them
/// in one transaction on its connection (group commit, as SQLite's writer thread does), so
/// that a job's row, which every task operation updates, is locked once per batch instead of
/// once per operation. A batch whose connection failed gets a fresh one for the next.
async fn run_writer(
    pool: AnyPool,
    mut rx: mpsc::Receiver<Msg>,
    publisher: Publisher,
    rules: QueueRules,
    clock: Clock,
) {
    let seen = Seen::default();
    let mut ctx: Option<WriteCtx> = None;
    let mut closing = None;
    while closing.is_none() {
        let Some(first) = rx.recv().await else { break };
        let batch = next_batch(first, &mut rx, &mut closing);
        if batch.is_empty() {
            continue;
        }
        let ready = match ctx.as_mut() {
            Some(ctx) => ctx,
            None => match pool.acquire().await {
                Ok(conn) => ctx.insert(WriteCtx::new(
                    Box::new(Counted::new(conn)),
                    Backend::Postgres,
                    seen.clone(),
                    rules.clone(),
                    clock.clone(),
                )),
                Err(e) => {
                    // Dropping the jobs answers their callers "unavailable, retry".
                    tracing::warn!(error = %e, "the PostgreSQL writer has no connection");
                    drop(batch);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if let Err(e) = run_batch(ready, batch, &publisher).await {
            tracing::error!(error = ?e, "write batch failed and was rolled back");
            ctx = None;
        }
    }
    drop(ctx);
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

/// Channel name of the notifications (payload: the newest event id, and ` work` when a task
/// became pending).
const CHANNEL: &str = "agora_events";

/// Publishes events from the table in id order; runs until the store closes (the task is
/// aborted).
async fn pump(
    reader: AnyPool,
    mut last: i64,
    url: String,
    events: broadcast::Sender<crate::frames::Live>,
    work_available: Arc<Notify>,
    wake: Arc<Notify>,
) {
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
                let _ = events.send(crate::frames::Published::new(e));
            }
            if !full {
                break;
            }
        }
    }
}

/// The newest event id, 0 when there is none.
async fn read_last_id(reader: &AnyPool) -> std::result::Result<i64, sqlx::Error> {
    let (id,): (Option<i64>,) = sqlx::query_as("SELECT MAX(id) FROM events")
        .fetch_one(reader)
        .await?;
    Ok(id.unwrap_or(0))
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
