//! The store: every read and write of Agora's state, one set of statements (`$1` placeholders)
//! for SQLite and PostgreSQL. Statements that differ per database (row locks) live in [`sql`]
//! under one name each.
//!
//! Layout, top to bottom (each file calls only those below it):
//! - this file: [`Store`], opening it, and the list of write operations;
//! - `agents.rs`, `jobs.rs`, `votes.rs`, `tasks.rs`, `events.rs`, `stats.rs`: the operations and
//!   reads of each resource (`*Params` in, shared types out);
//! - `steps/`: the pieces operations are made of (fetch a row for update, move a job through
//!   its lifecycle, end a task's delivery), on the open transaction;
//! - `rows.rs` (rows to shared types), `sql.rs` (shared SQL fragments), `db.rs` (one
//!   interface over rusqlite and sqlx), `error.rs` ([`StoreError`]), `clock.rs` ([`Clock`]);
//! - the backends: `sqlite.rs` (the file, its lock, the writer thread) and `postgres.rs` (the
//!   pool, the writer loops, the event pump and `LISTEN`), sharing the write path of `writer.rs`
//!   and the group commit of `batch.rs`.
//!
//! Writes go through [`Store::write`]: an operation is an async closure over a [`WriteCtx`].
//! An operation checks before it writes, so a refused one has written nothing; its answer and
//! its events are released only after the commit. Reads go through sqlx's `Any` pool on both
//! databases and never wait for the writer.

mod agents;
mod ahead;
mod batch;
mod checkpoint;
mod clock;
mod counters;
pub mod db;
pub mod error;
mod events;
mod jobs;
pub mod leadership;
mod own_reader;
pub use own_reader::OwnReader;
mod postgres;
mod rows;
pub mod sql;
mod sqlite;
mod stats;
mod steps;
mod tasks;
mod votes;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::future::BoxFuture;
use sqlx::any::AnyConnectOptions;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, ConnectOptions};
use tokio::sync::{broadcast, Notify};

use db::Exec;
use error::Result;

pub use agents::{AgentRegisterParams, StaleSweep};
pub use clock::Clock;
pub use error::StoreError;
pub use events::EventListParams;
pub use jobs::{JobInsertParams, JobListParams, Submitted};
pub use tasks::{
    ClaimBatch, ExpirySweep, Held, NextTask, TaskClaimParams, TaskCompleteParams, TaskFailParams,
    TaskListParams, TaskProgressParams, TaskStartParams,
};
pub use votes::{GateRules, VoteParams};
pub use writer::WriteCtx;

/// Which database is behind the `Any` driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// How many live events a slow subscriber may fall behind before it is told to resync.
const EVENT_BUFFER: usize = 4096;

/// Shared handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    /// Reads only; never blocked by the writer (WAL on SQLite, MVCC on PostgreSQL).
    reader: AnyPool,
    /// Queue to the group-commit writer.
    writer: writer::WriterHandle,
    /// Committed events, in id order, for the push hub and SSE.
    events: broadcast::Sender<crate::frames::Live>,
    /// Woken after a commit that made a task pending: long-poll claims and the dispatcher wait on it.
    work_available: Arc<Notify>,
    /// PostgreSQL: the task that publishes events from the table (see [`pump`]), and how it
    /// ended when it did.
    pump: Option<Pump>,
    /// SQLite: the exclusive lock beside the database file, held while the store lives, so a
    /// second server on the same file refuses to start (its events would never reach this
    /// one's readers).
    lock: std::sync::Mutex<Option<std::fs::File>>,
    /// SQLite: the database file, for connections of a thread's own ([`OwnReader`]).
    sqlite_path: Option<std::path::PathBuf>,
    /// When the writer last answered a health check, and whether it did.
    last_ping: std::sync::Mutex<Option<(std::time::Instant, bool)>>,
    clock: Clock,
}

/// The queue's clocks and limits, from the configuration; every write operation sees them.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueRules {
    /// A REST claim not started (nor reported on) within this goes back to pending.
    pub claim_lease_ms: i64,
    /// A WebSocket offer's lease in the database: the offer TTL plus a margin, so the socket's
    /// own timer normally ends it first and the sweep only rescues offers of a lost server.
    pub offer_lease_ms: i64,
    /// A task delivered this often without finishing fails for good (0: no limit).
    pub max_deliveries: u32,
    /// The base of the retry backoff (0: none).
    pub retry_backoff_ms: i64,
    /// Holders allowed per exclusive key, where not 1 (`KEY_LIMITS`).
    pub key_limits: std::sync::Arc<std::collections::HashMap<String, u32>>,
    /// How long an idempotency key answers its job.
    pub idempotency_ttl_ms: i64,
    /// Most bytes of dependency results a claim carries as `inputs` (`MAX_SPEC_BYTES`).
    pub max_inputs_bytes: usize,
    /// PostgreSQL: batches one replica's writer runs at once (`DB_WRITERS`).
    pub writers: usize,
}

impl QueueRules {
    /// How many tasks holding `key` may be claimed or running at once.
    pub fn key_limit(&self, key: &str) -> u32 {
        self.key_limits.get(key).copied().unwrap_or(1)
    }
}

/// How much longer than the offer TTL an offer's database lease lasts.
pub const OFFER_LEASE_MARGIN_MS: i64 = 5_000;

impl Default for QueueRules {
    fn default() -> Self {
        QueueRules {
            claim_lease_ms: agora_shared::DEFAULT_CLAIM_LEASE_SECS as i64 * 1000,
            offer_lease_ms: 15_000 + OFFER_LEASE_MARGIN_MS,
            max_deliveries: agora_shared::DEFAULT_MAX_DELIVERIES,
            retry_backoff_ms: (agora_shared::DEFAULT_RETRY_BACKOFF_SECS * 1000.0) as i64,
            key_limits: Default::default(),
            idempotency_ttl_ms: 86_400_000,
            max_inputs_bytes: agora_shared::DEFAULT_MAX_SPEC_BYTES,
            writers: 2,
        }
    }
}

/// A store's backend, opened: what [`Store::open`] gets from `sqlite.rs` or `postgres.rs`.
struct Opened {
    backend: Backend,
    reader: AnyPool,
    writer: writer::WriterHandle,
    pump: Option<Pump>,
    lock: Option<std::fs::File>,
}

/// PostgreSQL's event pump, and how it ended when it did.
type Pump = (
    tokio::task::JoinHandle<()>,
    tokio::sync::watch::Receiver<Option<String>>,
);

/// The sqlx options of both stores: statements logged at trace, slow ones at warn.
fn connect_options(url: &str, backend: Backend) -> anyhow::Result<AnyConnectOptions> {
    Ok(AnyConnectOptions::from_str(url)
        .with_context(|| format!("parsing the database URL for {}", backend.name()))?
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1)))
}

impl Store {
    /// Opens (and creates, on SQLite) the database and runs the migrations, with the default
    /// queue rules.
    pub async fn connect(
        database_url: Option<&str>,
        db_path: &std::path::Path,
    ) -> anyhow::Result<Store> {
        Store::connect_with(database_url, db_path, QueueRules::default()).await
    }

    /// Opens the database with these queue rules.
    pub async fn connect_with(
        database_url: Option<&str>,
        db_path: &std::path::Path,
        rules: QueueRules,
    ) -> anyhow::Result<Store> {
        Store::open(database_url, db_path, rules, Clock::system()).await
    }

    /// Opens the database with these queue rules and this clock (tests drive a manual one).
    pub async fn open(
        database_url: Option<&str>,
        db_path: &std::path::Path,
        rules: QueueRules,
        clock: Clock,
    ) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let work_available = Arc::new(Notify::new());
        let publisher = |pump| writer::Publisher {
            events: events.clone(),
            work_available: work_available.clone(),
            pump,
        };
        let opened = match database_url {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                let (feed, own) = writer::PumpFeed::new();
                let options = connect_options(url, Backend::Postgres)?;
                postgres::open(
                    url,
                    options,
                    publisher(Some(feed)),
                    own,
                    rules,
                    clock.clone(),
                )
                .await?
            }
            Some(url) => anyhow::bail!(
                "DATABASE_URL must start with postgres:// (got {url:?}); leave it unset for SQLite"
            ),
            None => {
                let url = format!("sqlite://{}?mode=rwc", db_path.display());
                let options = connect_options(&url, Backend::Sqlite)?;
                sqlite::open(db_path, options, publisher(None), rules, clock.clone()).await?
            }
        };
        Ok(Store {
            inner: Arc::new(Inner {
                backend: opened.backend,
                reader: opened.reader,
                writer: opened.writer,
                events,
                work_available,
                pump: opened.pump,
                lock: std::sync::Mutex::new(opened.lock),
                sqlite_path: (opened.backend == Backend::Sqlite).then(|| db_path.to_path_buf()),
                last_ping: std::sync::Mutex::new(None),
                clock,
            }),
        })
    }

    /// The store's clock.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    pub(crate) fn reader(&self) -> &AnyPool {
        &self.inner.reader
    }

    /// Runs `op` as one atomic change. It sees a [`WriteCtx`]; when it fails nothing it did is
    /// kept. The answer comes back after the commit, and the events it wrote are published then.
    pub async fn write<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut WriteCtx) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        self.inner.writer.submit(None, false, op).await
    }

    /// [`Store::write`] for a claim, start or completion: an operation that PostgreSQL may run
    /// beside other replicas' (see `batch::run_batch`), and whose first step the batch may do
    /// ahead, together with its others' (`ahead.rs`), when it has a `hint`.
    pub(crate) async fn write_shared<T, F>(&self, hint: Option<ahead::Hint>, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut WriteCtx) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        self.inner.writer.submit(hint, true, op).await
    }

    /// Live committed events. Subscribe before reading the backlog so that nothing falls between.
    pub fn subscribe(&self) -> broadcast::Receiver<crate::frames::Live> {
        self.inner.events.subscribe()
    }

    /// Resolves when a commit made work available (or spuriously; callers re-check).
    pub fn work_available(&self) -> &Notify {
        &self.inner.work_available
    }

    /// Resolves when the writer (SQLite's thread, PostgreSQL's task) has ended, saying how.
    pub fn writer_ended(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        self.inner.writer.ended()
    }

    /// Resolves when PostgreSQL's event pump has ended, saying how (never on SQLite, nor when
    /// [`Store::close`] stops it).
    pub fn pump_ended(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let ended = self.inner.pump.as_ref().map(|(_, ended)| ended.clone());
        async move {
            if let Some(ended) = ended {
                if let Some(how) = crate::supervise::first_some(ended).await {
                    return how;
                }
            }
            std::future::pending().await
        }
    }

    /// Whether the database answers a write: a no-op through the writer (on SQLite its thread
    /// and its connection) within two seconds. The answer stands for a second, so health
    /// checks cost the writer at most one no-op a second.
    pub async fn writer_answers(&self) -> bool {
        const STANDS: Duration = Duration::from_secs(1);
        if let Ok(last) = self.inner.last_ping.lock() {
            if let Some((at, answered)) = *last {
                if at.elapsed() < STANDS {
                    return answered;
                }
            }
        }
        let ping = self.write(|ctx| {
            Box::pin(async move {
                ctx.db.fetch("SELECT 1", &[]).await?;
                Ok(())
            })
        });
        let answered = matches!(
            tokio::time::timeout(Duration::from_secs(2), ping).await,
            Ok(Ok(()))
        );
        if let Ok(mut last) = self.inner.last_ping.lock() {
            *last = Some((std::time::Instant::now(), answered));
        }
        answered
    }

    /// Stops the writer after what is queued; the pools close.
    pub async fn close(&self) {
        if let Some((p, _)) = &self.inner.pump {
            p.abort();
        }
        self.inner.writer.close().await;
        self.inner.reader.close().await;
        // The file is free for the next server once this one has stopped writing.
        if let Ok(mut lock) = self.inner.lock.lock() {
            lock.take();
        }
    }
}

#[async_trait::async_trait]
impl db::Exec for PoolConnection<Any> {
    async fn fetch(
        &mut self,
        sql: &str,
        args: &[db::Value],
    ) -> std::result::Result<Vec<db::Row>, db::DbError> {
        db::Exec::fetch(&mut **self, sql, args).await
    }

    async fn execute(
        &mut self,
        sql: &str,
        args: &[db::Value],
    ) -> std::result::Result<u64, db::DbError> {
        db::Exec::execute(&mut **self, sql, args).await
    }
}

/// Reads, on the read pool.
impl Store {
    pub(crate) async fn read_all<T: db::FromRow + Send>(
        &self,
        sql: &str,
        args: &[db::Value],
    ) -> Result<Vec<T>> {
        let mut conn = self.inner.reader.acquire().await?;
        Ok(db::ExecExt::all(&mut *conn, sql, args).await?)
    }

    pub(crate) async fn read_opt<T: db::FromRow + Send>(
        &self,
        sql: &str,
        args: &[db::Value],
    ) -> Result<Option<T>> {
        let mut conn = self.inner.reader.acquire().await?;
        Ok(db::ExecExt::opt(&mut *conn, sql, args).await?)
    }

    pub(crate) async fn read_one<T: db::FromRow + Send>(
        &self,
        sql: &str,
        args: &[db::Value],
    ) -> Result<T> {
        let mut conn = self.inner.reader.acquire().await?;
        Ok(db::ExecExt::one(&mut *conn, sql, args).await?)
    }
}

/// A quiet server's read pool.
impl Store {
    /// Closes every idle read connection but one, with its page cache (SQLite keeps up to 2 MB
    /// a connection) and its thread; how many it closed. The pool's own idle timeout never
    /// comes for them: it hands each read to the connection idle the longest, so the
    /// scheduler's tick alone keeps every connection a burst opened in use. The next burst
    /// opens them again, in about a millisecond each.
    pub async fn readers_close_idle(&self) -> usize {
        // A connection goes back to the pool in a task of its own after its read: let the
        // caller's reads of a moment ago finish handing theirs back.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let mut idle = Vec::new();
        while let Some(conn) = self.inner.reader.try_acquire() {
            idle.push(conn);
        }
        let kept = idle.pop();
        let closed = idle.len();
        for conn in idle {
            if let Err(e) = conn.close().await {
                tracing::debug!(error = %e, "closing an idle read connection");
            }
        }
        drop(kept);
        closed
    }
}

/// The write operations, each one atomic change.
impl Store {
    pub async fn agent_register(&self, p: AgentRegisterParams) -> Result<agora_shared::Agent> {
        self.write(move |ctx| Box::pin(agents::agent_insert(ctx, p)))
            .await
    }

    pub async fn agent_heartbeat(&self, id: uuid::Uuid) -> Result<agora_shared::Agent> {
        self.write(move |ctx| {
            Box::pin(async move {
                let agent = steps::agents::agent_touch(ctx, id).await?;
                tasks::tasks_heartbeat(ctx, id).await?;
                agent.into_agent()
            })
        })
        .await
    }

    pub async fn agent_unregister(&self, id: uuid::Uuid) -> Result<agora_shared::Agent> {
        self.write(move |ctx| Box::pin(agents::agent_unregister(ctx, id)))
            .await
    }

    pub async fn job_submit(&self, p: JobInsertParams) -> Result<jobs::Submitted> {
        self.write(move |ctx| Box::pin(jobs::job_submit(ctx, p)))
            .await
    }

    /// Forgets idempotency keys older than `IDEMPOTENCY_TTL_SECS`.
    pub async fn idempotency_expire(&self) -> Result<u64> {
        self.write(|ctx| Box::pin(jobs::idempotency_expire(ctx)))
            .await
    }

    /// A vote on a job or its plan (see [`votes`]).
    pub async fn vote(&self, p: VoteParams) -> Result<agora_shared::Approved> {
        self.write(move |ctx| Box::pin(votes::vote(ctx, p))).await
    }

    /// An operator sets an agent's roles.
    pub async fn agent_set_roles(
        &self,
        id: uuid::Uuid,
        roles: Vec<agora_shared::Role>,
    ) -> Result<agora_shared::Agent> {
        self.write(move |ctx| Box::pin(agents::agent_set_roles(ctx, id, roles)))
            .await
    }

    pub async fn job_cancel(
        &self,
        id: uuid::Uuid,
        reason: Option<String>,
    ) -> Result<agora_shared::Job> {
        self.write(move |ctx| Box::pin(jobs::job_cancel(ctx, id, reason)))
            .await
    }

    pub async fn task_claim(
        &self,
        p: TaskClaimParams,
    ) -> Result<Option<agora_shared::ClaimedTask>> {
        self.write(move |ctx| Box::pin(tasks::task_claim(ctx, p)))
            .await
    }

    /// Claims for several agents in one transaction, each a delivery over WebSocket; stops when
    /// nothing is available, and skips agents unregistered meanwhile.
    /// Each agent with whether it asked for `auto_start` (its task is started in the batch).
    pub async fn task_claim_many(&self, agents: Vec<(uuid::Uuid, bool)>) -> Result<ClaimBatch> {
        self.write_shared(None, move |ctx| {
            Box::pin(tasks::task_claim_many(ctx, agents))
        })
        .await
    }

    /// An offered task goes back to pending, no attempt counted (if `held` is still its
    /// delivery).
    pub async fn task_decline(
        &self,
        agent: uuid::Uuid,
        held: Held,
        reason: String,
    ) -> Result<agora_shared::Task> {
        self.write(move |ctx| {
            Box::pin(async move { tasks::task_decline(ctx, agent, held, &reason).await })
        })
        .await
    }

    /// A WebSocket agent lets go of its offers (released) and running tasks (a failed attempt
    /// when `charge`, else released too: the server's own doing, as in a drain). Each names
    /// the delivery it ends; a task delivered again since is left alone.
    pub async fn tasks_abandon(
        &self,
        agent: uuid::Uuid,
        held: Vec<Held>,
        reason: String,
        charge: bool,
    ) -> Result<usize> {
        self.write(move |ctx| {
            Box::pin(async move { tasks::tasks_abandon(ctx, agent, held, &reason, charge).await })
        })
        .await
    }

    pub async fn task_start(&self, p: TaskStartParams) -> Result<agora_shared::Task> {
        // A start with a heartbeat lease sets more than the set statement does.
        let hint = p.heartbeat_secs.is_none().then_some(ahead::Hint::Start {
            task: p.task_id,
            agent: p.agent_id,
            lease: p.lease_id,
        });
        self.write_shared(hint, move |ctx| Box::pin(tasks::task_start(ctx, p)))
            .await
    }

    pub async fn task_progress(&self, p: TaskProgressParams) -> Result<agora_shared::Task> {
        self.write(move |ctx| Box::pin(tasks::task_progress(ctx, p)))
            .await
    }

    pub async fn task_complete(
        &self,
        p: TaskCompleteParams,
    ) -> Result<agora_shared::FinishedWithNext> {
        let hint = ahead::Hint::Complete {
            task: p.task_id,
            agent: p.agent_id,
            lease: p.lease_id,
            result: p.result.to_string(),
            next: p.next,
        };
        self.write_shared(Some(hint), move |ctx| {
            Box::pin(tasks::task_complete(ctx, p))
        })
        .await
    }

    pub async fn task_fail(&self, p: TaskFailParams) -> Result<agora_shared::FinishedWithNext> {
        self.write(move |ctx| Box::pin(tasks::task_fail(ctx, p)))
            .await
    }

    /// Scheduler: agents silent since `stale_before` (ms) go offline and lose their tasks.
    pub async fn agents_mark_stale(&self, stale_before: i64) -> Result<StaleSweep> {
        self.write(move |ctx| Box::pin(agents::agents_mark_stale(ctx, stale_before)))
            .await
    }

    /// Scheduler: tasks past their deadline count a failed attempt; deliveries past their lease
    /// end (see [`ExpirySweep`]).
    pub async fn tasks_expire(&self) -> Result<ExpirySweep> {
        self.write(|ctx| Box::pin(tasks::tasks_expire(ctx))).await
    }

    /// Scheduler: jobs that waited for approvals past their deadline fail.
    pub async fn jobs_expire_approvals(&self) -> Result<usize> {
        self.write(|ctx| Box::pin(votes::jobs_expire_approvals(ctx)))
            .await
    }

    /// Scheduler: repair counters and settle finished jobs.
    pub async fn jobs_sync(&self) -> Result<usize> {
        self.write(|ctx| Box::pin(jobs::jobs_sync(ctx))).await
    }

    /// Scheduler, once a minute: the queue depth and agents online, for the charts.
    pub async fn stats_sample(&self) -> Result<()> {
        self.write(|ctx| Box::pin(stats::stats_sample(ctx))).await
    }
}

impl Store {
    /// The read pool, for tests that check the database directly.
    #[doc(hidden)]
    pub fn reader_for_tests(&self) -> &AnyPool {
        self.reader()
    }
}
