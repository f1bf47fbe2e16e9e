//! A job's task counters, kept in memory for the rest of a batch. Every task operation moves
//! its job's counters (`steps::jobs::job_task_changed`), and a batch of claims and completions
//! of one job would otherwise update the job's row once per operation (a round trip each on
//! PostgreSQL). The first change in a transaction updates the row as before (`RETURNING` it,
//! which also locks it on PostgreSQL until the commit); later changes in the same transaction
//! are applied to that copy, and the changes are written once, before the commit: added to the
//! row as it then is, so that they never write over another transaction's.
//!
//! The copy stays right without any caller's help: every other statement that names the
//! `jobs` table writes the pending counters first and drops the copies (so it reads and
//! changes the row as it is), the batch writes them before its events and its commit
//! (`write_back`), and `BEGIN` and `ROLLBACK` drop them unwritten. Applying a change counts as a write, so an operation refused after it rolls its
//! batch back (`batch::run_batch`).

use std::collections::HashMap;

use async_trait::async_trait;

use super::db::{DbError, Exec, Row, Value};
use super::rows::JobRow;
use crate::args;

/// The writer's connection with its jobs' counters.
pub struct Counters {
    inner: Box<dyn Exec>,
    /// Job id → its row as this transaction has made it.
    jobs: HashMap<String, JobCopy>,
    /// Changes applied in memory so far (counted as writes).
    applied: u64,
    /// PostgreSQL's shared batches (`batch::run_batch`): a statement that only reads `jobs`
    /// leaves the changes pending (they are added at the commit, in job id order, so that
    /// replicas' batches never wait on each other's job rows before then).
    defer: bool,
}

/// The counters' deltas of one task's move: total, completed, failed, running.
pub type Deltas = [i64; 4];

/// A job's row as a transaction has made it.
struct JobCopy {
    row: JobRow,
    /// The changes applied to it that the database does not have yet (`None`: nothing to write).
    behind: Option<Deltas>,
}

impl Counters {
    pub fn new(inner: Box<dyn Exec>) -> Counters {
        Counters {
            inner,
            jobs: HashMap::new(),
            applied: 0,
            defer: false,
        }
    }

    /// Applies `deltas` to the job's copy, if this transaction has one; the row as it now is.
    pub fn apply(&mut self, job_id: &str, deltas: Deltas, now: i64) -> Option<JobRow> {
        let JobCopy { row, behind } = self.jobs.get_mut(job_id)?;
        let [total, completed, failed, running] = deltas;
        row.tasks_total += total;
        row.tasks_completed += completed;
        row.tasks_failed += failed;
        row.tasks_running += running;
        row.updated_at = now;
        let sum = behind.get_or_insert([0; 4]);
        for (b, d) in sum.iter_mut().zip(deltas) {
            *b += d;
        }
        self.applied += 1;
        Some(row.clone())
    }

    /// Sets whether reads of `jobs` leave the changes pending (see `defer`), for a batch.
    pub fn defer(&mut self, on: bool) {
        self.defer = on;
    }

    /// Counts a write done for the running operation by another statement (`ahead.rs`).
    pub fn wrote(&mut self) {
        self.applied += 1;
    }

    /// Keeps the job's row as a statement of this transaction read it, unless a copy is kept
    /// already (which may be ahead of the database). Its counters are exact while nothing else
    /// writes the row until the commit (SQLite's one writer, PostgreSQL's exclusive batches);
    /// beside other batches (PostgreSQL's shared ones, `batch::run_batch`) they may miss what
    /// those commit meanwhile, which the changes added at the commit keep.
    pub fn keep_read(&mut self, row: JobRow) {
        self.jobs
            .entry(row.id.clone())
            .or_insert(JobCopy { row, behind: None });
    }

    /// Keeps the job's row as a statement of this transaction returned it.
    pub fn keep(&mut self, row: &JobRow) {
        self.jobs.insert(
            row.id.clone(),
            JobCopy {
                row: row.clone(),
                behind: None,
            },
        );
    }

    /// The copies the database is behind on, by job id (in that order: the order the rows are
    /// locked in), with the changes it lacks and the time of the last; forgets every copy.
    fn take_behind(&mut self) -> Vec<(String, Deltas, i64)> {
        let mut behind: Vec<(String, Deltas, i64)> = std::mem::take(&mut self.jobs)
            .into_iter()
            .filter_map(|(id, c)| c.behind.map(|d| (id, d, c.row.updated_at)))
            .collect();
        behind.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        behind
    }

    /// Writes the counters the database is behind on, then forgets every copy (the batch does
    /// this before its events and its commit). The changes are added to the row as it is
    /// (not the copy written over it), so a change committed by another transaction since the
    /// copy was read is kept.
    pub async fn write_back(&mut self) -> Result<(), DbError> {
        for (id, [total, completed, failed, running], at) in self.take_behind() {
            self.inner
                .execute(
                    "UPDATE jobs SET tasks_total = tasks_total + $2, tasks_completed = tasks_completed + $3, \
                     tasks_failed = tasks_failed + $4, tasks_running = tasks_running + $5, updated_at = $6 \
                     WHERE id = $1",
                    args![id, total, completed, failed, running, at],
                )
                .await?;
        }
        Ok(())
    }

    /// The statements that write the counters the database is behind on (as [`write_back`]
    /// does), with their values written out (numbers, and ids checked to be UUIDs: nothing to
    /// quote), and forgets every copy: PostgreSQL sends them with the batch's `COMMIT`, in one
    /// round trip. With `settle`, each returns its job's id as `settle` when the job is executing
    /// with every task finished: a batch beside this one (`batch::run_batch`) may have finished
    /// the others, so that neither copy saw them all; the last of the two to write its counters
    /// sees the sum (the row is locked and read as it is then).
    pub fn write_back_sql(&mut self, settle: bool) -> Result<String, DbError> {
        let mut sql = String::new();
        let returning = match settle {
            true => format!(
                " RETURNING CASE WHEN status = '{}' AND tasks_completed + tasks_failed >= tasks_total \
                 THEN id END AS settle",
                agora_shared::JobStatus::Executing.as_str()
            ),
            false => String::new(),
        };
        for (id, [total, completed, failed, running], at) in self.take_behind() {
            let id = uuid::Uuid::parse_str(&id)
                .map_err(|_| DbError::Decode("jobs.id".into(), "a uuid"))?;
            sql.push_str(&format!(
                "UPDATE jobs SET tasks_total = tasks_total + {total}, \
                 tasks_completed = tasks_completed + {completed}, \
                 tasks_failed = tasks_failed + {failed}, tasks_running = tasks_running + {running}, \
                 updated_at = {at} WHERE id = '{id}'{returning}; "
            ));
        }
        Ok(sql)
    }

    /// What a statement means for the copies, before it runs.
    async fn before(&mut self, sql: &str) -> Result<(), DbError> {
        if self.jobs.is_empty() {
            return Ok(());
        }
        let head = sql.trim_start();
        if head.starts_with("BEGIN") || head.starts_with("ROLLBACK") {
            self.jobs.clear();
            return Ok(());
        }
        if names_jobs(sql) && (!self.defer || locks_jobs(sql)) {
            return self.write_back().await;
        }
        Ok(())
    }
}

/// Whether a statement names the `jobs` table (the word, not `job_id` or `task_jobs`).
fn names_jobs(sql: &str) -> bool {
    let bytes = sql.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    sql.match_indices("jobs").any(|(i, _)| {
        let before = i.checked_sub(1).map(|j| bytes[j]);
        let after = bytes.get(i + 4).copied();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

/// Whether a statement that names `jobs` writes or locks its rows (else it only reads them, or
/// it locks tasks and joins jobs, as the claims' and completions' set statements do).
fn locks_jobs(sql: &str) -> bool {
    sql.contains("UPDATE jobs")
        || sql.contains("INTO jobs")
        || sql.contains("DELETE FROM jobs")
        || (sql.contains(" FOR ") && !sql.contains("UPDATE tasks"))
}

#[async_trait]
impl Exec for Counters {
    async fn fetch(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, DbError> {
        self.before(sql).await?;
        self.inner.fetch(sql, args).await
    }

    async fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, DbError> {
        self.before(sql).await?;
        self.inner.execute(sql, args).await
    }

    fn writes(&self) -> u64 {
        self.inner.writes() + self.applied
    }

    fn in_transaction(&self) -> bool {
        self.inner.in_transaction()
    }

    fn errors(&self) -> u64 {
        self.inner.errors()
    }

    fn release_memory(&mut self) {
        self.inner.release_memory()
    }
}

#[cfg(test)]
mod tests {
    use super::{locks_jobs, names_jobs};

    #[test]
    fn reads_of_jobs_are_told_from_writes_and_locks() {
        assert!(locks_jobs("UPDATE jobs SET status = $2 WHERE id = $1"));
        assert!(locks_jobs(
            "SELECT id FROM jobs JOIN job_specs ON job_specs.job_id = jobs.id WHERE id = $1 FOR NO KEY UPDATE"
        ));
        assert!(!locks_jobs("SELECT id, status FROM jobs WHERE id = $1"));
        assert!(!locks_jobs(
            "UPDATE tasks SET status = 'running' FROM jobs j WHERE j.id = tasks.job_id \
             AND tasks.id = (SELECT id FROM tasks FOR NO KEY UPDATE SKIP LOCKED)"
        ));
    }

    #[test]
    fn the_jobs_table_is_told_from_words_that_contain_it() {
        assert!(names_jobs("UPDATE jobs SET status = $2"));
        assert!(names_jobs(
            "SELECT x FROM jobs JOIN job_specs ON job_specs.job_id = jobs.id"
        ));
        assert!(names_jobs("SELECT COUNT(*) FROM jobs"));
        assert!(names_jobs("SELECT 1 FROM jobs\nWHERE id = $1"));
        assert!(!names_jobs(
            "UPDATE tasks SET status = 'completed' WHERE job_id = $1"
        ));
        assert!(!names_jobs("SELECT 1 FROM task_jobs, jobs_old"));
        assert!(!names_jobs(
            "INSERT INTO events (job_id, kind) VALUES ($1, $2)"
        ));
    }
}
