//! A read connection of a thread's own (SQLite), for the git history's thread, which reads
//! every finished task once. Through the read pool each row crossed to sqlx's worker thread
//! and back and was converted twice on the way: two thirds of the history's CPU under load,
//! and the history half of the server's. Here statements run on the calling thread, as the
//! writer's do (`db::SqliteExec`).

use std::path::Path;

use agora_shared::Task;
use uuid::Uuid;

use super::db::SqliteExec;
use super::error::Result;
use super::Store;

/// A read-only connection, used by one thread.
pub struct OwnReader {
    db: SqliteExec,
}

impl Store {
    /// A read connection for the calling thread (SQLite); `None` on PostgreSQL, whose reads
    /// run in the database's own processes anyway.
    pub fn own_reader(&self) -> Option<anyhow::Result<OwnReader>> {
        let path = self.inner.sqlite_path.as_deref()?;
        Some(OwnReader::open(path))
    }
}

impl OwnReader {
    fn open(path: &Path) -> anyhow::Result<OwnReader> {
        Ok(OwnReader {
            db: SqliteExec::new(super::sqlite::reader_connection(path)?),
        })
    }

    /// [`Store::tasks_finished_by_id`] on this connection; blocks the calling thread.
    pub fn tasks_finished_by_id(&mut self, job_id: Uuid, ids: &[Uuid]) -> Result<Vec<Task>> {
        futures::executor::block_on(super::tasks::finished_by_id(&mut self.db, job_id, ids))
    }
}
