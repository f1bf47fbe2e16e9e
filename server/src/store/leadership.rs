//! Work that one replica at a time does for all of them. The git history is such work: every
//! replica reads every event, and each would otherwise write every job's repository again, so
//! that N replicas did N times the history's work (on the bench's two replicas, git took 40% of
//! their CPU). On PostgreSQL the replica that holds a session advisory lock, on a connection of
//! its own, does it; the others try again now and then. When the holder stops or dies, its
//! connection closes, PostgreSQL frees the lock, and the next try of another replica takes it.
//! SQLite has one server per file (the lock beside it), which always leads.

use sqlx::{AnyConnection, Connection};

use super::{Backend, Store};

/// The lock of the git history's writer (an arbitrary constant).
pub const GIT_WRITER: i64 = 0x4147_4f52_4749_5457;

/// How long the holder's connection may take to answer before the lock counts as lost.
const PING: std::time::Duration = std::time::Duration::from_secs(5);

/// This replica's hold on a lock: kept while the value lives.
pub struct Leadership {
    /// PostgreSQL: the connection whose session holds the lock; none on SQLite.
    conn: Option<AnyConnection>,
}

impl Leadership {
    /// Whether this replica still holds the lock: its connection answers within [`PING`] (a
    /// session that ended lost its locks with it; one that does not answer is given up, and
    /// dropping the connection ends it).
    pub async fn held(&mut self) -> bool {
        match self.conn.as_mut() {
            None => true,
            Some(conn) => matches!(tokio::time::timeout(PING, conn.ping()).await, Ok(Ok(()))),
        }
    }
}

impl Store {
    /// Takes lock `key` for this replica if no other holds it: `None` while another does.
    pub async fn try_lead(&self, key: i64) -> anyhow::Result<Option<Leadership>> {
        if self.backend() == Backend::Sqlite {
            return Ok(Some(Leadership { conn: None }));
        }
        let mut conn = self.reader().acquire().await?;
        let (taken,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut *conn)
            .await?;
        // The holder keeps the connection for itself, out of the pool (which would hand it to
        // reads and close it when idle); a refused one goes back to the pool, holding nothing.
        Ok(taken.then(|| Leadership {
            conn: Some(conn.detach()),
        }))
    }
}
