//! The group-commit writer. On SQLite a single task owns the write connection: it takes every
//! queued operation (up to [`MAX_BATCH`]), runs each in its own savepoint inside one
//! transaction, commits once, and only then answers the callers and publishes their events. One
//! fsync serves the whole batch, and every operation is still all-or-nothing.
//!
//! On PostgreSQL there is no single writer: each operation runs in its own transaction on a
//! pooled connection, concurrently (row locks and `SKIP LOCKED` do the serialising).

use std::sync::Arc;

use agora_shared::Event;
use futures::future::BoxFuture;
use sqlx::AnyPool;
use tokio::sync::{broadcast, mpsc, oneshot, Notify};

use super::db::{DbError, Exec, SqliteExec};
use super::{now_ms, Backend};
use crate::error::{ApiError, Result};

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
    work_added: bool,
}

impl WriteCtx {
    fn new(db: Box<dyn Exec>, backend: Backend) -> Self {
        WriteCtx {
            db,
            backend,
            now: now_ms(),
            events: Vec::new(),
            work_added: false,
        }
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
}

impl Publisher {
    fn publish(&self, events: Vec<Event>, work_added: bool) {
        for e in events {
            // No subscriber is fine: the table has it.
            let _ = self.events.send(Arc::new(e));
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
    Sqlite(mpsc::Sender<Msg>),
    Postgres { pool: AnyPool, publisher: Publisher },
}

impl WriterHandle {
    /// The SQLite writer: its own thread, owning the only write connection.
    pub fn start_sqlite(
        conn: rusqlite::Connection,
        publisher: Publisher,
    ) -> std::io::Result<WriterHandle> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        std::thread::Builder::new()
            .name("agora-sqlite-writer".into())
            .spawn(move || {
                runtime.block_on(run_sqlite_writer(SqliteExec { conn }, rx, publisher))
            })?;
        Ok(WriterHandle::Sqlite(tx))
    }

    pub fn start_postgres(pool: AnyPool, publisher: Publisher) -> WriterHandle {
        WriterHandle::Postgres { pool, publisher }
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
                        (Some(e), Ok(_)) => {
                            Err(ApiError::Internal(anyhow::anyhow!("commit failed: {e}")))
                        }
                        (_, r) => r,
                    };
                    let _ = tx.send(answer);
                });
                Finish { ok, reply }
            })
        });
        match self {
            WriterHandle::Sqlite(queue) => {
                queue
                    .send(Msg::Job(job))
                    .await
                    .map_err(|_| ApiError::Unavailable("the server is shutting down".into()))?;
            }
            WriterHandle::Postgres { pool, publisher } => run_one(pool, publisher, job).await?,
        }
        rx.await
            .map_err(|_| ApiError::Unavailable("the writer stopped before answering".into()))?
    }

    pub async fn close(&self) {
        if let WriterHandle::Sqlite(queue) = self {
            let (tx, rx) = oneshot::channel();
            if queue.send(Msg::Close(tx)).await.is_ok() {
                let _ = rx.await;
            }
        }
    }
}

/// One operation in its own transaction (PostgreSQL).
async fn run_one(pool: &AnyPool, publisher: &Publisher, job: Job) -> Result<()> {
    let conn = pool.acquire().await?;
    let mut ctx = WriteCtx::new(Box::new(conn), Backend::Postgres);
    ctx.db.execute("BEGIN", &[]).await?;
    let finish = job(&mut ctx).await;
    if finish.ok {
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

async fn run_sqlite_writer(db: SqliteExec, mut rx: mpsc::Receiver<Msg>, publisher: Publisher) {
    let mut ctx = WriteCtx::new(Box::new(db), Backend::Sqlite);
    let mut closing = None;
    while closing.is_none() {
        let Some(first) = rx.recv().await else { break };
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

async fn run_batch(
    ctx: &mut WriteCtx,
    batch: Vec<Job>,
    publisher: &Publisher,
) -> std::result::Result<(), DbError> {
    ctx.db.execute("BEGIN IMMEDIATE", &[]).await?;
    let mut replies = Vec::with_capacity(batch.len());
    let mut events = Vec::new();
    let mut work_added = false;
    for job in batch {
        ctx.now = now_ms();
        ctx.events.clear();
        ctx.work_added = false;
        if let Err(e) = ctx.db.execute("SAVEPOINT op", &[]).await {
            let _ = ctx.db.execute("ROLLBACK", &[]).await;
            return Err(e);
        }
        let finish = job(ctx).await;
        let step = if finish.ok {
            ctx.db.execute("RELEASE op", &[]).await
        } else {
            match ctx.db.execute("ROLLBACK TO op", &[]).await {
                Ok(_) => ctx.db.execute("RELEASE op", &[]).await,
                Err(e) => Err(e),
            }
        };
        if let Err(e) = step {
            // The transaction is in an unknown state: give up on the whole batch.
            let _ = ctx.db.execute("ROLLBACK", &[]).await;
            (finish.reply)(Some(&e));
            for r in replies {
                let r: Reply = r;
                r(Some(&e));
            }
            return Err(e);
        }
        if finish.ok {
            events.append(&mut ctx.events);
            work_added |= ctx.work_added;
        }
        replies.push(finish.reply);
    }
    match ctx.db.execute("COMMIT", &[]).await {
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
    }
}
