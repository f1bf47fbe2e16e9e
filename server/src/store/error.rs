//! What a store operation can answer besides its result. The store speaks in its own terms (not
//! found, not yours, wrong state, conflict, database); `crate::error` turns these into HTTP in
//! one `From`. The drivers' errors are interpreted here: a uniqueness violation is a conflict, a
//! busy database or an exhausted pool is "unavailable, retry", the rest is a database fault.

use agora_shared::{
    FieldError, InvalidTaskAction, InvalidTransition, LeaseLost, PlanError, VoteRefused,
};
use chrono::{DateTime, Utc};

use super::db::DbError;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {id} does not exist")]
    NotFound { what: &'static str, id: String },
    /// The row exists but belongs to someone else (another agent's task).
    #[error("{0}")]
    Forbidden(String),
    /// The operation is not legal in the row's current state.
    #[error("{0}")]
    InvalidState(String),
    /// The same thing twice (a second approval by one agent, a name taken).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    LeaseLost(#[from] LeaseLost),
    /// An idempotency key already used with a different body.
    #[error("{0}")]
    IdempotencyConflict(String),
    #[error(transparent)]
    InvalidPlan(#[from] PlanError),
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// The voter may not vote on this (not an approver, or its own job or plan).
    #[error(transparent)]
    Refused(#[from] VoteRefused),
    /// The agent's approval cooldown has not run out.
    #[error("this agent may approve again at {0}")]
    Cooldown(DateTime<Utc>),
    /// Nothing was written and trying again may succeed (the writer stopped, the batch was
    /// rolled back, the database was busy).
    #[error("{0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(DbError),
    /// A row the store cannot read back, a panic in a write: a fault of the server.
    #[error("internal error: {0}")]
    Internal(#[from] anyhow::Error),
}

impl StoreError {
    pub fn not_found(what: &'static str, id: impl std::fmt::Display) -> Self {
        StoreError::NotFound {
            what,
            id: id.to_string(),
        }
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        StoreError::Invalid(FieldError::new(field, message))
    }
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        match e.interpret() {
            super::db::Fault::Duplicate(what) => StoreError::Conflict(what),
            super::db::Fault::Busy(what) => StoreError::Unavailable(what),
            super::db::Fault::Other => StoreError::Database(e),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        DbError::from(e).into()
    }
}

impl From<InvalidTransition> for StoreError {
    fn from(e: InvalidTransition) -> Self {
        StoreError::InvalidState(e.to_string())
    }
}

impl From<InvalidTaskAction> for StoreError {
    fn from(e: InvalidTaskAction) -> Self {
        StoreError::InvalidState(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_errors_are_interpreted() {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        db.execute_batch("CREATE TABLE t (name TEXT PRIMARY KEY, n INTEGER NOT NULL)")
            .unwrap();
        db.execute("INSERT INTO t VALUES ('a', 1)", []).unwrap();
        let twice = db.execute("INSERT INTO t VALUES ('a', 2)", []).unwrap_err();
        assert!(matches!(
            StoreError::from(DbError::from(twice)),
            StoreError::Conflict(m) if m.contains("already exists")
        ));
        // A NOT NULL violation is no duplicate: a fault of the server.
        let null = db
            .execute("INSERT INTO t VALUES ('b', NULL)", [])
            .unwrap_err();
        assert!(matches!(
            StoreError::from(DbError::from(null)),
            StoreError::Database(_)
        ));
        assert!(matches!(
            StoreError::from(sqlx::Error::PoolTimedOut),
            StoreError::Unavailable(_)
        ));
    }
}
