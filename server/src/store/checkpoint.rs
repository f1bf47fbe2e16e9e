//! The SQLite WAL's checkpoints, on a thread of their own. A checkpoint copies the pages the
//! WAL holds back into the database file and syncs it; SQLite runs one by default at the end of
//! the commit that takes the WAL past 1,000 pages, on the committing connection: the writer,
//! which then reads and writes a thousand pages and waits for a second fsync while every
//! caller waits for it. Here the writer only nudges this thread after each commit; the thread
//! gathers the commits of [`GATHER`] and checkpoints them (`PASSIVE`: it never blocks the
//! writer, which goes on appending to the WAL meanwhile).
//!
//! The WAL starts over from its beginning when a write finds it wholly copied back. Under a
//! long burst the writer commits again before this thread has caught up, so the writer keeps
//! SQLite's own checkpoint as a backstop at [`WRITER_BACKSTOP_PAGES`]: it finds all but the
//! last few pages copied already, and the WAL starts over at the next commit. If this thread
//! cannot open its connection, that backstop is all there is, as before.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long the thread lets commits gather before it checkpoints them.
pub(super) const GATHER: Duration = Duration::from_millis(50);

/// The WAL's length in pages (4 KB each) past which the writer checkpoints itself
/// (`wal_autocheckpoint`).
pub(super) const WRITER_BACKSTOP_PAGES: u32 = 4000;

/// The checkpoint thread, stopped when dropped.
pub(super) struct Checkpointer {
    thread: std::thread::Thread,
    stop: Arc<AtomicBool>,
}

impl Checkpointer {
    /// Opens a connection of its own to the database at `path` and starts the thread.
    pub(super) fn start(path: &Path) -> anyhow::Result<Checkpointer> {
        let conn = connection(path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let handle = std::thread::Builder::new()
            .name("agora-sqlite-checkpoint".into())
            .spawn(move || run(conn, &stopped))?;
        Ok(Checkpointer {
            thread: handle.thread().clone(),
            stop,
        })
    }

    /// Tells the thread that the writer committed.
    pub(super) fn committed(&self) {
        self.thread.unpark();
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.unpark();
    }
}

fn connection(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    // Only this thread uses it. A checkpoint reads the WAL's frames without the page cache.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(path, flags)?;
    conn.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA busy_timeout = 1000; PRAGMA cache_size = 16;",
    )?;
    Ok(conn)
}

fn run(conn: rusqlite::Connection, stop: &AtomicBool) {
    // Below the writer and the runtime, but not in the idle class (as the git history is): a
    // checkpoint holds SQLite's locks for moments that the writer may wait on, and a thread
    // that runs only on idle cores could keep it waiting under load.
    crate::threads::lower_priority(10);
    loop {
        // Returns at once if the writer committed since the last checkpoint began.
        std::thread::park();
        if stop.load(Ordering::Relaxed) {
            break;
        }
        std::thread::sleep(GATHER);
        if let Err(e) = checkpoint(&conn) {
            tracing::debug!(error = %e, "WAL checkpoint failed; the writer's own checkpoint stays");
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }
}

/// One passive checkpoint: (pages in the WAL, pages copied back).
fn checkpoint(conn: &rusqlite::Connection) -> rusqlite::Result<(i64, i64)> {
    let once = || {
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(1)?, r.get(2)?))
        })
    };
    match once()? {
        // A connection that has read nothing yet has not opened the WAL, and SQLite answers
        // that the database is not in WAL mode: a read opens it.
        (-1, -1) => {
            conn.query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| {
                r.get::<_, i64>(0)
            })?;
            once()
        }
        done => Ok(done),
    }
}
