//! The write path both stores share: what an operation sees ([`WriteCtx`]), how its answer
//! waits for the commit, and where committed effects go ([`Publisher`]). Both stores queue
//! operations to one writer that commits them in batches (`batch.rs`): SQLite's thread owns the
//! only write connection (`sqlite.rs`); each PostgreSQL replica has `DB_WRITERS` writer loops,
//! each on a pooled connection, taking turns at the queue (`postgres.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use agora_shared::Event;
use futures::future::BoxFuture;
use tokio::sync::{broadcast, mpsc, oneshot, watch, Notify};
use uuid::Uuid;

use super::clock::Clock;
use super::db::{DbError, Exec};
use super::error::{Result, StoreError};
use super::Backend;

/// What an operation sees: the connection inside the open transaction, the time of the
/// operation, and a place to leave the events it drafts.
pub struct WriteCtx {
    pub(crate) db: super::counters::Counters,
    pub backend: Backend,
    /// Milliseconds since the epoch when the operation started.
    pub now: i64,
    /// Events recorded by the batch's operations, written at its end (`events::event_insert`).
    pub(crate) drafts: Vec<(super::events::EventDraft, i64)>,
    pub(crate) work_added: bool,
    /// When this server last wrote each agent's `last_seen_at`, shared by all operations.
    seen: Seen,
    /// The queue's clocks and limits.
    pub rules: super::QueueRules,
    /// Where `now` comes from.
    pub(crate) clock: Clock,
    /// Rows the batch changed ahead of the operations that own them (`ahead.rs`).
    pub(crate) ahead: super::ahead::Ahead,
    /// PostgreSQL: the batch runs beside other replicas' shared batches (`batch::run_batch`):
    /// its claims pass over tasks with an exclusive key, and its jobs' counters are written
    /// at the commit.
    pub(crate) shared: bool,
}

/// Agent id → when its `last_seen_at` was last written (ms).
pub(crate) type Seen = Arc<std::sync::Mutex<HashMap<Uuid, i64>>>;

/// How long a written `last_seen_at` stands before an agent's next call writes it again.
const SEEN_WINDOW_MS: i64 = 1000;

impl WriteCtx {
    pub(crate) fn new(
        db: Box<dyn Exec>,
        backend: Backend,
        seen: Seen,
        rules: super::QueueRules,
        clock: Clock,
    ) -> Self {
        WriteCtx {
            db: super::counters::Counters::new(db),
            backend,
            now: clock.now_ms(),
            drafts: Vec::new(),
            work_added: false,
            seen,
            rules,
            clock,
            ahead: super::ahead::Ahead::default(),
            shared: false,
        }
    }

    /// Gives back what the writer keeps only for speed, between batches: the connection's page
    /// cache and prepared statements, and the room a burst's batches left in its maps.
    pub(crate) fn release_memory(&mut self) {
        super::db::Exec::release_memory(&mut self.db);
        self.ahead = super::ahead::Ahead::default();
        self.drafts = Vec::new();
        crate::memory::collect_here();
    }

    /// What `take` takes of the rows the batch changed ahead (`ahead.rs`), counted as a write
    /// of this operation's.
    pub(crate) fn take_ahead<T>(
        &mut self,
        take: impl FnOnce(&mut super::ahead::Ahead) -> Option<T>,
    ) -> Option<T> {
        let taken = take(&mut self.ahead)?;
        self.db.wrote();
        Some(taken)
    }

    pub(crate) fn seen_recently(&self, agent: Uuid) -> bool {
        let Ok(seen) = self.seen.lock() else {
            return false;
        };
        seen.get(&agent)
            .is_some_and(|at| self.now - at < SEEN_WINDOW_MS)
    }

    pub(crate) fn mark_seen(&mut self, agent: Uuid) {
        if let Ok(mut seen) = self.seen.lock() {
            if seen.len() > 100_000 {
                let now = self.now;
                seen.retain(|_, at| now - *at < SEEN_WINDOW_MS);
            }
            seen.insert(agent, self.now);
        }
    }

    pub(crate) fn forget_seen(&mut self, agent: Uuid) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.remove(&agent);
        }
    }

    pub(crate) fn drafted(&mut self, draft: super::events::EventDraft) {
        self.drafts.push((draft, self.now));
    }

    pub(crate) fn take_drafts(&mut self) -> Vec<(super::events::EventDraft, i64)> {
        std::mem::take(&mut self.drafts)
    }

    /// Marks that this operation made a task pending (wakes long-polls and the dispatcher).
    pub(crate) fn work_added(&mut self) {
        self.work_added = true;
    }
}

/// Where committed effects go.
#[derive(Clone)]
pub(crate) struct Publisher {
    pub events: broadcast::Sender<crate::frames::Live>,
    pub work_available: Arc<Notify>,
    /// On PostgreSQL events reach the broadcast through the pump (in id order across
    /// replicas); a commit hands it the batch's events.
    pub pump: Option<PumpFeed>,
}

/// What a PostgreSQL replica's writer and `LISTEN` tell its event pump (`postgres::pump`).
#[derive(Clone)]
pub(crate) struct PumpFeed {
    /// Read the table: another replica committed, or a notification may have been lost.
    pub wake: Arc<Notify>,
    /// This replica's committed events, batch by batch, in id order: published as they are
    /// when they follow the last published event, else read from the table.
    pub own: mpsc::UnboundedSender<Vec<Event>>,
    /// This replica's mark in its notifications, so that its `LISTEN` skips its own.
    pub origin: u64,
}

impl PumpFeed {
    pub(crate) fn new() -> (PumpFeed, mpsc::UnboundedReceiver<Vec<Event>>) {
        let (own, rx) = mpsc::unbounded_channel();
        let feed = PumpFeed {
            wake: Arc::new(Notify::new()),
            own,
            origin: rand::random(),
        };
        (feed, rx)
    }
}

impl Publisher {
    pub(crate) fn publish(&self, events: Vec<Event>, work_added: bool) {
        match &self.pump {
            Some(pump) => {
                if !events.is_empty() {
                    // The pump may be gone only when the store is closing.
                    let _ = pump.own.send(events);
                }
            }
            None => {
                for e in events {
                    // No subscriber is fine: the table has it.
                    let _ = self.events.send(crate::frames::Published::new(e));
                }
            }
        }
        if work_added {
            self.work_available.notify_waiters();
        }
    }
}

/// Sends the operation's answer once the fate of its transaction is known.
pub(crate) type Reply = Box<dyn FnOnce(Option<&DbError>) + Send>;

pub(crate) struct Finish {
    pub ok: bool,
    pub reply: Reply,
}

pub(crate) type Run = Box<dyn for<'c> FnOnce(&'c mut WriteCtx) -> BoxFuture<'c, Finish> + Send>;

/// A queued operation, with what it will do first when the batch can do that ahead for many
/// (`ahead.rs`).
pub(crate) struct Job {
    pub run: Run,
    pub hint: Option<super::ahead::Hint>,
    /// Safe to run beside other replicas' batches of such operations on PostgreSQL (see
    /// `batch::run_batch`): claims, starts and completions.
    pub shared: bool,
}

pub(crate) enum Msg {
    Job(Job),
    Close(oneshot::Sender<()>),
}

/// Where operations go: a writer takes them from this queue and commits them in batches
/// (SQLite's thread, or a PostgreSQL replica's task).
pub(crate) struct WriterHandle {
    pub queue: mpsc::Sender<Msg>,
    /// Set when the writer has ended: how (stopped, or panicked and why).
    pub ended: watch::Receiver<Option<String>>,
}

impl WriterHandle {
    /// Resolves when the writer has ended, saying how.
    pub fn ended(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let ended = self.ended.clone();
        async move {
            crate::supervise::first_some(ended)
                .await
                .unwrap_or_else(|| "stopped".to_string())
        }
    }

    pub async fn submit<T, F>(
        &self,
        hint: Option<super::ahead::Hint>,
        shared: bool,
        op: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut WriteCtx) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T>>();
        let run: Run = Box::new(move |ctx: &mut WriteCtx| {
            Box::pin(async move {
                let result = op(ctx).await;
                let ok = result.is_ok();
                let reply: Reply = Box::new(move |commit_error| {
                    let answer = match (commit_error, result) {
                        (Some(DbError::RolledBack), Ok(_) | Err(StoreError::Database(_))) => {
                            Err(StoreError::Unavailable(
                                "the write was rolled back with its batch; retry".into(),
                            ))
                        }
                        (Some(e), Ok(_)) => match e.interpret() {
                            super::db::Fault::Busy(why) => Err(StoreError::Unavailable(format!(
                                "the write was rolled back with its batch: {why}"
                            ))),
                            _ => Err(StoreError::Internal(anyhow::anyhow!("commit failed: {e}"))),
                        },
                        (_, r) => r,
                    };
                    let _ = tx.send(answer);
                });
                Finish { ok, reply }
            })
        });
        self.queue
            .send(Msg::Job(Job { run, hint, shared }))
            .await
            .map_err(|_| StoreError::Unavailable("the database writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the writer stopped before answering".into()))?
    }

    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.queue.send(Msg::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}
