//! The group-commit writer. On SQLite a single task owns the write connection: it takes every
//! queued operation (up to [`MAX_BATCH`]), runs each in its own savepoint inside one
//! transaction, commits once, and only then answers the callers and publishes their events. One
//! fsync serves the whole batch, and every operation is still all-or-nothing.
//!
//! On PostgreSQL there is no single writer: each operation runs in its own transaction on a
//! pooled connection, concurrently (row locks and `SKIP LOCKED` do the serialising).

use std::collections::HashMap;
use std::sync::Arc;

use agora_shared::Event;
use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::AnyPool;
use tokio::sync::{broadcast, mpsc, oneshot, watch, Notify};
use uuid::Uuid;

use super::db::{DbError, Exec, SqliteExec};
use super::error::{Result, StoreError};
use super::events::events_flush;
use super::{now_ms, Backend};

/// Most operations in one transaction.
const MAX_BATCH: usize = 512;
/// Operations that may wait for the writer before callers feel back-pressure.
const QUEUE: usize = 16_384;

/// What an operation sees: the connection inside the open transaction, the time of the
/// operation, and a place to leave the events it wrote.
pub struct WriteCtx {
    pub(crate) db: Box<dyn Exec>,
    pub backend: Backend,
    /// Milliseconds since the epoch when the operation started.
    pub now: i64,
    events: Vec<Event>,
    /// Events recorded by the operation, written when it has finished.
    drafts: Vec<(super::events::EventDraft, i64)>,
    work_added: bool,
    /// When this server last wrote each agent's `last_seen_at`, shared by all operations.
    seen: Seen,
    /// The queue's clocks and limits.
    pub rules: super::QueueRules,
}

/// Agent id → when its `last_seen_at` was last written (ms).
pub(crate) type Seen = Arc<std::sync::Mutex<HashMap<Uuid, i64>>>;

/// How long a written `last_seen_at` stands before an agent's next call writes it again.
const SEEN_WINDOW_MS: i64 = 1000;

impl WriteCtx {
    fn new(db: Box<dyn Exec>, backend: Backend, seen: Seen, rules: super::QueueRules) -> Self {
        WriteCtx {
            db,
            backend,
            now: now_ms(),
            events: Vec::new(),
            drafts: Vec::new(),
            work_added: false,
            seen,
            rules,
        }
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

    pub(crate) fn is_work_added(&self) -> bool {
        self.work_added
    }

    /// Records an event written in this operation, to publish after the commit.
    pub(crate) fn emitted(&mut self, event: Event) {
        self.events.push(event);
    }

    /// Marks that this operation made a task pending (wakes long-polls and the dispatcher).
    pub(crate) fn work_added(&mut self) {
        self.work_added = true;
    }
}

/// Where committed effects go.
#[derive(Clone)]
pub(crate) struct Publisher {
    pub events: broadcast::Sender<Arc<Event>>,
    pub work_available: Arc<Notify>,
    /// On PostgreSQL events reach the broadcast through the pump (in id order across
    /// replicas); a commit only wakes it.
    pub pump: Option<Arc<Notify>>,
}

impl Publisher {
    fn publish(&self, events: Vec<Event>, work_added: bool) {
        match &self.pump {
            Some(pump) => pump.notify_one(),
            None => {
                for e in events {
                    // No subscriber is fine: the table has it.
                    let _ = self.events.send(Arc::new(e));
                }
            }
        }
        if work_added {
            self.work_available.notify_waiters();
        }
    }
}

/// Sends the operation's answer once the fate of its transaction is known.
type Reply = Box<dyn FnOnce(Option<&DbError>) + Send>;

pub(crate) struct Finish {
    ok: bool,
    reply: Reply,
}

type Job = Box<dyn for<'c> FnOnce(&'c mut WriteCtx) -> BoxFuture<'c, Finish> + Send>;

pub(crate) enum Msg {
    Job(Job),
    Close(oneshot::Sender<()>),
}

pub(crate) enum WriterHandle {
    Sqlite {
        queue: mpsc::Sender<Msg>,
        /// Set when the writer thread has ended: how (stopped, or panicked and why).
        ended: watch::Receiver<Option<String>>,
    },
    Postgres {
        pool: AnyPool,
        publisher: Publisher,
        /// Heartbeat writes skipped within a second, across this server's operations.
        seen: Seen,
        rules: super::QueueRules,
    },
}

impl WriterHandle {
    /// The SQLite writer: its own thread, owning the only write connection.
    pub fn start_sqlite(
        conn: rusqlite::Connection,
        publisher: Publisher,
        rules: super::QueueRules,
    ) -> std::io::Result<WriterHandle> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (ended_tx, ended) = watch::channel(None);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        std::thread::Builder::new()
            .name("agora-sqlite-writer".into())
            .spawn(move || {
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    runtime.block_on(run_sqlite_writer(
                        SqliteExec { conn, writes: 0 },
                        rx,
                        publisher,
                        rules,
                    ))
                }));
                let _ = ended_tx.send(Some(crate::supervise::how_it_ended(run)));
            })?;
        Ok(WriterHandle::Sqlite { queue: tx, ended })
    }

    /// Resolves when the writer thread has ended, saying how; never on PostgreSQL (no thread).
    pub fn ended(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let ended = match self {
            WriterHandle::Sqlite { ended, .. } => Some(ended.clone()),
            WriterHandle::Postgres { .. } => None,
        };
        async move {
            let Some(ended) = ended else {
                return std::future::pending().await;
            };
            crate::supervise::first_some(ended)
                .await
                .unwrap_or_else(|| "stopped".to_string())
        }
    }

    pub fn start_postgres(
        pool: AnyPool,
        publisher: Publisher,
        rules: super::QueueRules,
    ) -> WriterHandle {
        WriterHandle::Postgres {
            pool,
            publisher,
            seen: Seen::default(),
            rules,
        }
    }

    pub async fn submit<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut WriteCtx) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |ctx: &mut WriteCtx| {
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
                        (Some(e), Ok(_)) => {
                            Err(StoreError::Internal(anyhow::anyhow!("commit failed: {e}")))
                        }
                        (_, r) => r,
                    };
                    let _ = tx.send(answer);
                });
                Finish { ok, reply }
            })
        });
        match self {
            WriterHandle::Sqlite { queue, .. } => {
                queue.send(Msg::Job(job)).await.map_err(|_| {
                    StoreError::Unavailable("the database writer has stopped".into())
                })?;
            }
            WriterHandle::Postgres {
                pool,
                publisher,
                seen,
                rules,
            } => {
                let (pool, publisher, seen, rules) =
                    (pool.clone(), publisher.clone(), seen.clone(), *rules);
                // Its own task: a caller that goes away (a client disconnect drops its
                // handler) cannot stop the transaction halfway, open on a pooled connection.
                tokio::spawn(async move { run_one(&pool, &publisher, &seen, rules, job).await })
                    .await
                    .map_err(|e| StoreError::Internal(anyhow::anyhow!("a write panicked: {e}")))??
            }
        }
        rx.await
            .map_err(|_| StoreError::Unavailable("the writer stopped before answering".into()))?
    }

    pub async fn close(&self) {
        if let WriterHandle::Sqlite { queue, .. } = self {
            let (tx, rx) = oneshot::channel();
            if queue.send(Msg::Close(tx)).await.is_ok() {
                let _ = rx.await;
            }
        }
    }
}

/// One operation in its own transaction (PostgreSQL).
async fn run_one(
    pool: &AnyPool,
    publisher: &Publisher,
    seen: &Seen,
    rules: super::QueueRules,
    job: Job,
) -> Result<()> {
    let conn = pool.acquire().await?;
    let mut ctx = WriteCtx::new(Box::new(conn), Backend::Postgres, seen.clone(), rules);
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

async fn run_sqlite_writer(
    db: SqliteExec,
    mut rx: mpsc::Receiver<Msg>,
    publisher: Publisher,
    rules: super::QueueRules,
) {
    let mut ctx = WriteCtx::new(Box::new(db), Backend::Sqlite, Seen::default(), rules);
    let mut closing = None;
    let death = crate::fault::writer_death_at();
    while closing.is_none() {
        let received = tokio::select! {
            m = rx.recv() => m,
            _ = crate::fault::at(death) => panic!("fault hook: the writer thread was told to die"),
        };
        let Some(first) = received else { break };
        let mut batch = Vec::new();
        match first {
            Msg::Job(j) => batch.push(j),
            Msg::Close(done) => closing = Some(done),
        }
        while closing.is_none() && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Job(j)) => batch.push(j),
                Ok(Msg::Close(done)) => closing = Some(done),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        if let Err(e) = run_batch(&mut ctx, batch, &publisher).await {
            tracing::error!(error = ?e, "write batch failed and was rolled back");
        }
    }
    drop(ctx);
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

/// Runs a batch in one transaction. Operations check before they write (a refused operation
/// writes nothing), so no savepoint is needed per operation; savepoints would copy every page
/// an operation touches into a sub-journal. If an operation fails after writing anyway (a
/// database error, or a bug), the whole transaction is rolled back: the operations before it
/// are answered "rolled back, retry" and the ones after it run in a fresh transaction.
async fn run_batch(
    ctx: &mut WriteCtx,
    batch: Vec<Job>,
    publisher: &Publisher,
) -> std::result::Result<(), DbError> {
    let mut pending = batch.into_iter();
    loop {
        if let Err(e) = ctx.db.execute("BEGIN IMMEDIATE", &[]).await {
            // Dropping the jobs answers their callers with "the writer stopped before answering".
            drop(pending);
            return Err(e);
        }
        let mut replies: Vec<Reply> = Vec::new();
        let mut events = Vec::new();
        let mut work_added = false;
        let mut broken = false;
        for job in pending.by_ref() {
            ctx.now = now_ms();
            ctx.events.clear();
            ctx.drafts.clear();
            ctx.work_added = false;
            let writes_before = ctx.db.writes();
            let finish = job(ctx).await;
            let flushed = if finish.ok {
                events_flush(ctx).await
            } else {
                Ok(())
            };
            if !ctx.db.in_transaction() {
                // SQLite rolled the transaction back itself (SQLITE_FULL, IOERR, ...): what
                // ran in it is gone, and what follows must not run in autocommit.
                tracing::error!("the database ended the batch's transaction itself; its operations are answered 503");
                (finish.reply)(Some(&DbError::RolledBack));
                for r in replies.drain(..) {
                    r(Some(&DbError::RolledBack));
                }
                broken = true;
                break;
            }
            if flushed.is_err() || (!finish.ok && ctx.db.writes() != writes_before) {
                tracing::error!("an operation failed after writing; rolling back its batch");
                let _ = ctx.db.execute("ROLLBACK", &[]).await;
                (finish.reply)(flushed.err().as_ref());
                for r in replies.drain(..) {
                    r(Some(&DbError::RolledBack));
                }
                broken = true;
                break;
            }
            if finish.ok {
                events.append(&mut ctx.events);
                work_added |= ctx.work_added;
            }
            replies.push(finish.reply);
        }
        if broken {
            continue;
        }
        return match ctx.db.execute("COMMIT", &[]).await {
            Ok(_) => {
                for r in replies {
                    r(None);
                }
                publisher.publish(events, work_added);
                Ok(())
            }
            Err(e) => {
                let _ = ctx.db.execute("ROLLBACK", &[]).await;
                for r in replies {
                    r(Some(&e));
                }
                Err(e)
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use crate::args;
    use crate::store::Store;
    use crate::store::StoreError;

    /// An agent row with only the columns a test needs.
    const INSERT_AGENT: &str =
        "INSERT INTO agents (id, name, status, token_hash, registered_at, last_seen_at) \
         VALUES ($1, $2, 'online', $1, 0, 0)";

    async fn count(store: &Store, name: &str) -> i64 {
        let (n,): (i64,) = store
            .read_one("SELECT COUNT(*) FROM agents WHERE name = $1", args![name])
            .await
            .unwrap();
        n
    }

    /// An operation that fails after writing must leave nothing behind, and must not take
    /// other callers' committed answers with it: they either committed or were told to retry.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failure_after_a_write_rolls_back_only_what_was_not_answered() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(None, &dir.path().join("t.db"))
            .await
            .unwrap();
        let insert = INSERT_AGENT;
        let mut calls = Vec::new();
        for i in 0..50 {
            let store = store.clone();
            calls.push(tokio::spawn(async move {
                let name = if i % 10 == 3 { "bad" } else { "good" };
                let r: Result<(), StoreError> = store
                    .write(move |ctx| {
                        Box::pin(async move {
                            ctx.db
                                .execute(insert, args![uuid::Uuid::new_v4(), name])
                                .await?;
                            if name == "bad" {
                                return Err(StoreError::Conflict("refused after writing".into()));
                            }
                            Ok(())
                        })
                    })
                    .await;
                (name, r)
            }));
        }
        let mut committed = 0;
        for c in calls {
            match c.await.unwrap() {
                ("bad", r) => assert!(matches!(r, Err(StoreError::Conflict(_)))),
                (_, Ok(())) => committed += 1,
                (_, Err(e)) => assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}"),
            }
        }
        assert_eq!(
            count(&store, "bad").await,
            0,
            "a failed operation's write survived"
        );
        assert_eq!(
            count(&store, "good").await,
            committed,
            "every answered success is committed"
        );
    }

    /// SQLite may end a transaction itself (SQLITE_FULL, IOERR): the operations after that must
    /// not run in autocommit, and the ones before are answered "rolled back" (503), never a
    /// success that was not kept. Simulated with an operation that rolls back the transaction
    /// without a write of its own, in the middle of one batch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_transaction_the_database_ended_itself_fails_its_batch_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(None, &dir.path().join("t.db"))
            .await
            .unwrap();
        let insert = INSERT_AGENT;
        // Holds the writer so the calls below queue up and run as one batch.
        let (hold, held) = tokio::sync::oneshot::channel::<()>();
        let blocker = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(move |_ctx| {
                        Box::pin(async move {
                            let _ = held.await;
                            Ok(())
                        })
                    })
                    .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let mut calls = Vec::new();
        for (i, name) in ["before", "ender", "after"].into_iter().enumerate() {
            let store = store.clone();
            calls.push(tokio::spawn(async move {
                store
                    .write(move |ctx| {
                        Box::pin(async move {
                            if name == "ender" {
                                ctx.db.execute("ROLLBACK", &[]).await?;
                                return Err(StoreError::Conflict("the database gave up".into()));
                            }
                            ctx.db
                                .execute(insert, args![uuid::Uuid::new_v4(), name])
                                .await?;
                            Ok(())
                        })
                    })
                    .await
            }));
            tokio::time::sleep(std::time::Duration::from_millis(20 * (i as u64 + 1))).await;
        }
        let _ = hold.send(());
        blocker.await.unwrap().unwrap();
        let mut answers = Vec::new();
        for c in calls {
            answers.push(c.await.unwrap());
        }
        assert!(
            matches!(answers[0], Err(StoreError::Unavailable(_))),
            "{:?}",
            answers[0]
        );
        assert!(matches!(answers[1], Err(StoreError::Conflict(_))));
        for (name, answer) in ["before", "after"].iter().zip([&answers[0], &answers[2]]) {
            assert_eq!(
                count(&store, name).await,
                i64::from(answer.is_ok()),
                "{name}: answered {answer:?}"
            );
        }
    }
}
