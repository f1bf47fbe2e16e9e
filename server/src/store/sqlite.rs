//! The SQLite store: one file in WAL mode, an exclusive lock beside it (one server per file), a
//! read pool that never waits for the writer, and the group-commit writer. A single thread owns
//! the only write connection (rusqlite): it takes every queued operation (up to
//! `batch::MAX_BATCH`), runs them in one transaction, commits once, and only then answers the callers
//! and publishes their events. One fsync serves the whole batch, and every operation is still
//! all-or-nothing (see `batch::run_batch`).

use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::Executor;
use tokio::sync::{mpsc, watch};

use super::batch::{next_batch, run_batch, QUEUE};
use super::checkpoint::{Checkpointer, WRITER_BACKSTOP_PAGES};
use super::clock::Clock;
use super::db::SqliteExec;
use super::writer::{Msg, Publisher, Seen, WriteCtx, WriterHandle};
use super::{Backend, Opened, QueueRules};

/// The pool's own idle timeout. It seldom comes: the pool hands each read to the connection
/// idle the longest, and the scheduler reads at every tick. What closes the connections a burst
/// opened is `Store::readers_close_idle`, at each quiet scheduler tick.
const READER_IDLE: std::time::Duration = std::time::Duration::from_secs(20);
/// The writer gives back its connection's caches when it has had nothing to do for this long.
const QUIET: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens (and creates) the database file, runs the migrations and starts the writer.
pub(super) async fn open(
    db_path: &std::path::Path,
    options: AnyConnectOptions,
    publisher: Publisher,
    rules: QueueRules,
    clock: Clock,
) -> anyhow::Result<Opened> {
    if let Some(dir) = db_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the database folder {}", dir.display()))?;
    }
    let lock = lock(db_path)?;
    // Migrations through sqlx, once, before the writer opens its own connection.
    let migrator_pool = AnyPoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await
        .context("opening the SQLite database")?;
    sqlx::migrate!("migrations/sqlite")
        .run(&migrator_pool)
        .await
        .context("running the SQLite migrations")?;
    migrator_pool.close().await;
    let checkpointer = match Checkpointer::start(db_path) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "no checkpoint thread: the writer checkpoints the WAL itself");
            None
        }
    };
    let conn =
        writer_connection(db_path, checkpointer.is_some()).context("opening the SQLite writer")?;
    let writer = start_writer(conn, checkpointer, publisher, rules, clock)
        .context("starting the SQLite writer")?;
    // A reader connection keeps a page cache of up to 2 MB: those a burst opened are closed
    // once quiet for a while, and their memory goes back (the busy path reopens one in a
    // millisecond).
    let reader = AnyPoolOptions::new()
        .max_connections(8)
        .min_connections(1)
        .idle_timeout(READER_IDLE)
        .after_connect(|conn, _| Box::pin(async move { reader_pragmas(conn).await }))
        .connect_with(options)
        .await
        .context("opening the SQLite read pool")?;
    Ok(Opened {
        backend: Backend::Sqlite,
        reader,
        writer,
        pump: None,
        lock: Some(lock),
    })
}

/// The writer: its own thread, owning the only write connection.
fn start_writer(
    conn: rusqlite::Connection,
    checkpointer: Option<Checkpointer>,
    publisher: Publisher,
    rules: QueueRules,
    clock: Clock,
) -> std::io::Result<WriterHandle> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let (ended_tx, ended) = watch::channel(None);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .on_thread_park(crate::memory::collect_if_asked)
        .build()?;
    std::thread::Builder::new()
        .name("agora-sqlite-writer".into())
        .spawn(move || {
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                runtime.block_on(run_writer(
                    SqliteExec::new(conn),
                    checkpointer,
                    rx,
                    publisher,
                    rules,
                    clock,
                ))
            }));
            let _ = ended_tx.send(Some(crate::supervise::how_it_ended(run)));
        })?;
    Ok(WriterHandle { queue: tx, ended })
}

async fn run_writer(
    db: SqliteExec,
    checkpointer: Option<Checkpointer>,
    mut rx: mpsc::Receiver<Msg>,
    publisher: Publisher,
    rules: QueueRules,
    clock: Clock,
) {
    let mut ctx = WriteCtx::new(Box::new(db), Backend::Sqlite, Seen::default(), rules, clock);
    let mut closing = None;
    let death = crate::fault::writer_death_at();
    let mut released = true;
    let mut released_for = crate::memory::caches_asked();
    while closing.is_none() {
        let received = tokio::select! {
            m = rx.recv() => m,
            _ = crate::fault::at(death) => panic!("fault hook: the writer thread was told to die"),
            _ = tokio::time::sleep(QUIET), if !released => {
                ctx.release_memory();
                released = true;
                continue;
            }
        };
        released = false;
        let Some(first) = received else { break };
        let batch = next_batch(first, &mut rx, &mut closing);
        if batch.is_empty() {
            continue;
        }
        if let Err(e) = run_batch(&mut ctx, batch, &publisher).await {
            tracing::error!(error = ?e, "write batch failed and was rolled back");
        }
        if let Some(c) = &checkpointer {
            c.committed();
        }
        // The server is quiet (no event for a scheduler interval) while the writer still has
        // work, such as idle agents' `last_seen`: it gives its caches back at each quiet tick.
        // (A writer with no work at all gives them back after `QUIET`, above.)
        let asked = crate::memory::caches_asked();
        if asked != released_for {
            released_for = asked;
            ctx.release_memory();
            released = true;
        }
    }
    drop(ctx);
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

/// Takes the exclusive lock `<db_path>.lock`: one server per SQLite file. The lock goes with
/// the process, however it ends.
fn lock(db_path: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let mut name = db_path.as_os_str().to_owned();
    name.push(".lock");
    let path = std::path::PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another agora server is using {} (it holds {}): run one server per SQLite file, or PostgreSQL (DATABASE_URL) for several",
            db_path.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// The writer's connection: WAL lets readers run beside it; FULL makes each group commit
/// durable (one fsync per batch). A batch's set statements (`ahead.rs`) change many rows each,
/// and SQLite keeps an undo copy of every page such a statement touches (its statement
/// journal): in memory, not in a temporary file (a `pwrite` per page was a sixth of the
/// writer's time). The page cache holds a busy queue's pages (at 2 MB, a `pread` per miss was
/// another eighth); it is given back when the server is quiet (`release_memory`). With a
/// checkpoint thread (`checkpointed`), the writer's own checkpoint is only its backstop.
fn writer_connection(
    path: &std::path::Path,
    checkpointed: bool,
) -> rusqlite::Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    // Only the writer thread touches this connection: no SQLite-level mutex needed.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(path, flags)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
         PRAGMA busy_timeout = 5000; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -16384;",
    )?;
    if checkpointed {
        conn.pragma_update(None, "wal_autocheckpoint", WRITER_BACKSTOP_PAGES)?;
    }
    conn.set_prepared_statement_cache_capacity(256);
    Ok(conn)
}

/// What every read connection runs first: the read pool's and a thread's own.
const READER_PRAGMAS: &str =
    "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; PRAGMA query_only = ON;";

async fn reader_pragmas(conn: &mut sqlx::AnyConnection) -> std::result::Result<(), sqlx::Error> {
    conn.execute(READER_PRAGMAS).await?;
    Ok(())
}

/// A read connection for one thread of its own (`store::OwnReader`): like the pool's, but
/// used where it is opened, without sqlx.
pub(super) fn reader_connection(path: &std::path::Path) -> rusqlite::Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    // Only the thread that opened it uses it: no SQLite-level mutex needed.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(path, flags)?;
    conn.execute_batch(READER_PRAGMAS)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use crate::args;
    use crate::store::db::Exec;
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

    /// Agents as the database file alone holds them (a copy of it without its WAL).
    fn copied_back(path: &std::path::Path) -> i64 {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("copy.db");
        std::fs::copy(path, &copy).unwrap();
        let conn = rusqlite::Connection::open(&copy).unwrap();
        conn.query_row("SELECT COUNT(*) FROM agents", [], |r| r.get(0))
            .unwrap()
    }

    /// The store's commits reach the database file through the checkpoint thread
    /// (`checkpoint.rs`): far below the writer's backstop, nothing else copies them back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_stores_commits_are_copied_back_by_the_checkpoint_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = Store::connect(None, &path).await.unwrap();
        assert_eq!(copied_back(&path), 0);
        for i in 0..20 {
            store
                .write(move |ctx| {
                    Box::pin(async move {
                        ctx.db
                            .execute(INSERT_AGENT, args![uuid::Uuid::new_v4(), format!("a{i}")])
                            .await?;
                        Ok(())
                    })
                })
                .await
                .unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while copied_back(&path) != 20 {
            assert!(
                std::time::Instant::now() < deadline,
                "the commits were not copied back: {} of 20",
                copied_back(&path)
            );
            tokio::time::sleep(super::super::checkpoint::GATHER).await;
        }
    }
}
