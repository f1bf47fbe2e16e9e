//! The PostgreSQL store, for several replicas on one database. Writes: each operation runs in
//! its own transaction on a pooled connection, concurrently; row locks and `SKIP LOCKED` do the
//! serialising. Events: every replica publishes to its own WebSocket and SSE clients by reading
//! the events table in id order (the pump), woken by its own commits and by `LISTEN
//! agora_events` for the other replicas' commits. The table is the source of truth: a lost
//! notification is repaired by the next read (and a read every second as a safety net).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::FutureExt;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::postgres::PgListener;
use sqlx::AnyPool;
use tokio::sync::{broadcast, Notify};

use super::clock::Clock;
use super::error::Result;
use super::events::{events_flush, read_events_after};
use super::writer::{Job, Publisher, Seen, WriteCtx, WriterHandle};
use super::{Backend, Opened, QueueRules};

/// What every write of this replica shares.
struct Writes {
    pool: AnyPool,
    publisher: Publisher,
    /// Heartbeat writes skipped within a second, across this replica's operations.
    seen: Seen,
    rules: QueueRules,
    clock: Clock,
}

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
    let (ended_tx, ended) = tokio::sync::watch::channel(None);
    let task = tokio::spawn(async move {
        let run = std::panic::AssertUnwindSafe(run).catch_unwind().await;
        let _ = ended_tx.send(Some(crate::supervise::how_it_ended(run)));
    });
    let writes = Arc::new(Writes {
        pool: pool.clone(),
        publisher,
        seen: Seen::default(),
        rules,
        clock,
    });
    let writer = WriterHandle::Direct(Arc::new(move |job| Box::pin(run_one(writes.clone(), job))));
    Ok(Opened {
        backend: Backend::Postgres,
        reader: pool,
        writer,
        pump: Some((task, ended)),
        lock: None,
    })
}

/// One operation in its own transaction.
async fn run_one(writes: Arc<Writes>, job: Job) -> Result<()> {
    let Writes {
        pool,
        publisher,
        seen,
        rules,
        clock,
    } = &*writes;
    let conn = pool.acquire().await?;
    let mut ctx = WriteCtx::new(
        Box::new(conn),
        Backend::Postgres,
        seen.clone(),
        rules.clone(),
        clock.clone(),
    );
    ctx.db.execute("BEGIN", &[]).await?;
    let finish = match std::panic::AssertUnwindSafe(job(&mut ctx))
        .catch_unwind()
        .await
    {
        Ok(finish) => finish,
        Err(panic) => {
            // Not back to the pool with the transaction open: the next user would commit it.
            let _ = ctx.db.execute("ROLLBACK", &[]).await;
            std::panic::resume_unwind(panic);
        }
    };
    let flushed = if finish.ok {
        events_flush(&mut ctx).await
    } else {
        Ok(())
    };
    if let Err(e) = flushed {
        ctx.db.execute("ROLLBACK", &[]).await?;
        (finish.reply)(Some(&e));
    } else if finish.ok {
        match ctx.db.execute("COMMIT", &[]).await {
            Ok(_) => {
                (finish.reply)(None);
                publisher.publish(std::mem::take(&mut ctx.events), ctx.work_added);
            }
            Err(e) => (finish.reply)(Some(&e)),
        }
    } else {
        ctx.db.execute("ROLLBACK", &[]).await?;
        (finish.reply)(None);
    }
    Ok(())
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
