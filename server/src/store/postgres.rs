//! The PostgreSQL store, for several replicas on one database. Writes: each replica's writer
//! loops (`DB_WRITERS`) run the queued operations in batches, one transaction each, side by
//! side (group commit, see `batch::run_batch`); row locks and `SKIP LOCKED` do the
//! serialising, with the claims lock held exclusively by the batches that need one at a time
//! (keyed claims, everything but claims, starts and completions).
//! Events: every replica publishes to its own WebSocket and SSE clients in id order (the pump):
//! its own batches as the writer hands them over when they follow the last event published,
//! the other replicas' by reading the events table when `LISTEN agora_events` announces a newer
//! event. The table is the source of truth: a lost notification is repaired by the next read
//! (and a read every second as a safety net).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agora_shared::Event;
use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::postgres::PgListener;
use sqlx::AnyPool;
use tokio::sync::{broadcast, mpsc, Notify};

use super::batch::{next_batch, run_batch, QUEUE};
use super::clock::Clock;
use super::db::Counted;
use super::events::read_events_after;
use super::writer::{Msg, Publisher, PumpFeed, Seen, WriteCtx, WriterHandle};
use super::{Backend, Opened, QueueRules};

/// Connects, runs the migrations and starts the pump, which gets the writer's committed events
/// through `own` (and `publisher.pump`'s wake-up from `LISTEN`).
pub(super) async fn open(
    url: &str,
    options: AnyConnectOptions,
    publisher: Publisher,
    own: mpsc::UnboundedReceiver<Vec<Event>>,
    rules: QueueRules,
    clock: Clock,
) -> anyhow::Result<Opened> {
    let feed = publisher
        .pump
        .clone()
        .context("a PostgreSQL store publishes through its pump")?;
    let pool = AnyPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(10))
        // No ping before each use (a round trip per read): a connection that broke fails its
        // statement, and the pool drops it.
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .context("connecting to PostgreSQL")?;
    sqlx::migrate!("migrations/postgres")
        .run(&pool)
        .await
        .context("running the PostgreSQL migrations")?;
    // Where publishing starts, read before the store is handed out: an event committed by the
    // first caller is after it, so it is published (read later, it could be skipped).
    let last = read_last_id(&pool)
        .await
        .context("reading the newest event id")?;
    let run = pump(
        pool.clone(),
        last,
        url.to_string(),
        own,
        feed,
        publisher.events.clone(),
        publisher.work_available.clone(),
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

/// The replica's writer: `DB_WRITERS` loops (`QueueRules::writers`) that each take every
/// queued operation (up to `batch::MAX_BATCH`) and run them in one transaction on a connection
/// of their own (group commit, as SQLite's writer thread does), so that a job's row, which
/// every task operation updates, is locked once per batch instead of once per operation. A
/// batch whose connection failed gets a fresh one for the next. While one batch waits for
/// PostgreSQL (its statements, its commit's fsync), the next loop takes what was queued
/// meanwhile and runs it beside, as another replica's batch would (see `batch::run_batch`:
/// shared batches run side by side, exclusive ones one at a time under the claims lock). A
/// close request stops every loop; it is answered when the batches in flight have ended.
async fn run_writer(
    pool: AnyPool,
    rx: mpsc::Receiver<Msg>,
    publisher: Publisher,
    rules: QueueRules,
    clock: Clock,
) {
    let queue = Arc::new(Queue {
        rx: tokio::sync::Mutex::new(rx),
        closed: AtomicBool::new(false),
    });
    let seen = Seen::default();
    let loops: Vec<_> = (0..rules.writers.max(1))
        .map(|_| {
            tokio::spawn(write_loop(
                pool.clone(),
                queue.clone(),
                publisher.clone(),
                seen.clone(),
                rules.clone(),
                clock.clone(),
            ))
        })
        .collect();
    let mut closing = None;
    for ended in loops {
        match ended.await {
            Ok(done) => closing = closing.or(done),
            // A loop that panicked: the writer's supervisor reports it.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {}
        }
    }
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

/// The queue the writer's loops take batches from, one loop at a time.
struct Queue {
    rx: tokio::sync::Mutex<mpsc::Receiver<Msg>>,
    /// A loop took the close request: the others stop too.
    closed: AtomicBool,
}

/// One of the writer's loops; returns the close request if it took it.
async fn write_loop(
    pool: AnyPool,
    queue: Arc<Queue>,
    publisher: Publisher,
    seen: Seen,
    rules: QueueRules,
    clock: Clock,
) -> Option<tokio::sync::oneshot::Sender<()>> {
    let mut ctx: Option<WriteCtx> = None;
    let mut closing = None;
    while closing.is_none() {
        let batch = {
            let mut rx = queue.rx.lock().await;
            if queue.closed.load(Ordering::SeqCst) {
                break;
            }
            let Some(first) = rx.recv().await else { break };
            let batch = next_batch(first, &mut rx, &mut closing);
            if closing.is_some() {
                queue.closed.store(true, Ordering::SeqCst);
            }
            batch
        };
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
    closing
}

/// Channel name of the notifications.
pub(super) const CHANNEL: &str = "agora_events";

/// A batch's notification: the newest event id it committed (0 when none), then
/// [`notification_rest`].
pub(super) fn notification(last: i64, origin: u64, work_added: bool) -> String {
    format!("{last}{}", notification_rest(origin, work_added))
}

/// A notification after its event id: the replica's origin, and ` work` when a task became
/// pending (digits and a word: nothing to quote in a statement).
pub(super) fn notification_rest(origin: u64, work_added: bool) -> String {
    let work = if work_added { " work" } else { "" };
    format!(" {origin}{work}")
}

/// A notification read back: (newest event id, origin, work added); `None` when malformed.
fn parse_notification(payload: &str) -> Option<(i64, u64, bool)> {
    let mut words = payload.split(' ');
    let last = words.next()?.parse().ok()?;
    let origin = words.next()?.parse().ok()?;
    let work = match words.next() {
        None => false,
        Some("work") => true,
        Some(_) => return None,
    };
    Some((last, origin, work))
}

/// What `LISTEN` heard, for the pump: the newest event id another replica announced, and
/// whether the table must be read whatever that id (the connection was lost, or a payload was
/// not understood).
#[derive(Default)]
struct Heard {
    newest: AtomicI64,
    read_anyway: AtomicBool,
}

/// Publishes events in id order; runs until the store closes (the task is aborted). This
/// replica's own batches are published as they come from the writer when they follow the
/// last published event: their ids were handed out under the append lock, which every batch
/// holds until it commits, so every smaller id was committed (or rolled back) before. When they
/// do not follow (another replica committed in between, or a rolled-back batch left a hole),
/// and when another replica announces a newer event, the table is read; and once a second
/// anyway, as a safety net.
async fn pump(
    reader: AnyPool,
    mut last: i64,
    url: String,
    mut own: mpsc::UnboundedReceiver<Vec<Event>>,
    feed: PumpFeed,
    events: broadcast::Sender<crate::frames::Live>,
    work_available: Arc<Notify>,
) {
    let heard = Arc::new(Heard::default());
    tokio::spawn(listen(
        url,
        feed.origin,
        work_available,
        feed.wake.clone(),
        heard.clone(),
    ));
    loop {
        let read = tokio::select! {
            batch = own.recv() => match batch {
                Some(batch) => {
                    let fresh: Vec<Event> = batch.into_iter().filter(|e| e.id > last).collect();
                    match fresh.first() {
                        Some(first) if first.id == last + 1 => {
                            for e in fresh {
                                last = e.id;
                                let _ = events.send(crate::frames::Published::new(e));
                            }
                            false
                        }
                        Some(_) => true,
                        None => false,
                    }
                }
                // The writer is gone (closing): the table still has the others' events.
                None => {
                    feed.wake.notified().await;
                    true
                }
            },
            _ = feed.wake.notified() => {
                heard.read_anyway.swap(false, Ordering::SeqCst)
                    || heard.newest.load(Ordering::SeqCst) > last
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => true,
        };
        if !read {
            continue;
        }
        loop {
            let page = match read_events_after(&reader, last, 1000).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "event pump read failed; retrying");
                    heard.read_anyway.store(true, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    feed.wake.notify_one();
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

/// Relays the other replicas' notifications (this replica's own are skipped: its pump has its
/// events from the writer): their commits wake the pump, and their new pending tasks wake this
/// replica's long-polls and dispatcher.
async fn listen(
    url: String,
    origin: u64,
    work_available: Arc<Notify>,
    wake: Arc<Notify>,
    heard: Arc<Heard>,
) {
    // Anything committed while no connection listened is found by reading the table.
    let missed = || {
        heard.read_anyway.store(true, Ordering::SeqCst);
        wake.notify_one();
        work_available.notify_waiters();
    };
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
        missed();
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => match parse_notification(n.payload()) {
                    Some((_, from, _)) if from == origin => {}
                    Some((newest, _, work)) => {
                        heard.newest.fetch_max(newest, Ordering::SeqCst);
                        if work {
                            work_available.notify_waiters();
                        }
                        wake.notify_one();
                    }
                    None => {
                        tracing::warn!(payload = n.payload(), "a notification not understood");
                        missed();
                    }
                },
                // The connection dropped; `try_recv` reconnects on the next call.
                Ok(None) => missed(),
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_reads_back_as_written() {
        let written = notification(9, 42, true);
        assert_eq!(parse_notification(&written), Some((9, 42, true)));
        let written = notification(0, u64::MAX, false);
        assert_eq!(parse_notification(&written), Some((0, u64::MAX, false)));
        assert_eq!(parse_notification("9 work"), None);
        assert_eq!(parse_notification("9 1 play"), None);
        assert_eq!(parse_notification(""), None);
    }
}
