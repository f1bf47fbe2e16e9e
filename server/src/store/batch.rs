//! The group commit both stores share: a batch of queued operations in one transaction,
//! answered after the commit. SQLite's writer thread and each of a PostgreSQL replica's writer
//! loops take every operation queued (up to [`MAX_BATCH`]) and run them here.

use tokio::sync::{mpsc, oneshot};

use super::ahead::{prepare, Hint};
use super::db::{DbError, Exec};
use super::events::{events_commit_sql, events_committed, events_flush, EventDraft};
use super::writer::{Finish, Job, Msg, Publisher, Reply, WriteCtx};
use super::Backend;

/// Most operations in one transaction.
pub(crate) const MAX_BATCH: usize = 512;
/// Operations that may wait for a writer before callers feel back-pressure.
pub(crate) const QUEUE: usize = 16_384;

/// The batch that starts with `first`: it and whatever is queued already, up to [`MAX_BATCH`].
/// A close request ends it and is left in `closing`.
pub(crate) fn next_batch(
    first: Msg,
    rx: &mut mpsc::Receiver<Msg>,
    closing: &mut Option<oneshot::Sender<()>>,
) -> Vec<Job> {
    let mut batch = Vec::new();
    match first {
        Msg::Job(j) => batch.push(j),
        Msg::Close(done) => *closing = Some(done),
    }
    while closing.is_none() && batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(Msg::Job(j)) => batch.push(j),
            Ok(Msg::Close(done)) => *closing = Some(done),
            Err(_) => break,
        }
    }
    batch
}

/// `BEGIN`, then the claims lock (see [`run_batch`]), in one round trip: shared when every
/// operation of the batch may run beside other replicas' and no pending task has an exclusive
/// key (the function `agora_claims_lock`, migration 0008), else exclusive. Says whether it is
/// shared.
async fn begin_postgres(ctx: &mut WriteCtx, shared: bool) -> Result<bool, DbError> {
    static SQL: [std::sync::OnceLock<String>; 2] = [const { std::sync::OnceLock::new() }; 2];
    let lock = super::steps::graph::CLAIM_LOCK;
    let sql = SQL[usize::from(shared)].get_or_init(|| match shared {
        false => format!("BEGIN; SELECT pg_advisory_xact_lock({lock})::text || 'x' AS mode"),
        true => format!("BEGIN; SELECT agora_claims_lock({lock}) AS mode"),
    });
    let rows = ctx.db.fetch(sql, &[]).await?;
    let mode = rows.iter().find_map(|r| r.get::<String>("mode").ok());
    match mode.as_deref() {
        Some("x") => Ok(false),
        Some("s") => Ok(true),
        _ => Err(DbError::Decode("mode".into(), "the claims lock's mode")),
    }
}

/// The statement that ends a batch: `COMMIT`, on PostgreSQL after the jobs' counters
/// (`write_back`, see `counters.rs`), the batch's events (`events::events_commit_sql`) and one
/// notification (see `postgres::notification`) for every other replica's pump and dispatcher.
/// All in one round trip (the payload is digits and a word, the counters numbers and UUIDs:
/// nothing to quote; the events' text is quoted as literals).
fn commit_sql(
    publisher: &Publisher,
    write_back: &str,
    drafts: &[(EventDraft, i64)],
    work_added: bool,
) -> std::borrow::Cow<'static, str> {
    let feed = publisher
        .pump
        .as_ref()
        .filter(|_| !drafts.is_empty() || work_added);
    // With events, the notification carries the newest id, known only in the statement.
    let rest = feed.map(|f| super::postgres::notification_rest(f.origin, work_added));
    let events = events_commit_sql(drafts, rest.as_deref());
    let notify = match feed {
        Some(f) if drafts.is_empty() => format!(
            "SELECT pg_notify('{}', '{}'); ",
            super::postgres::CHANNEL,
            super::postgres::notification(0, f.origin, work_added)
        ),
        _ => String::new(),
    };
    if events.is_empty() && write_back.is_empty() && notify.is_empty() {
        return "COMMIT".into();
    }
    format!("{write_back}{events}{notify}COMMIT").into()
}

/// The operation a shared batch queues for the jobs its counters' write found ready to settle
/// (`Counters::write_back_sql`): each settled from its row as it is, locked, in a batch of its
/// own.
fn settle_job(jobs: Vec<uuid::Uuid>) -> Job {
    Job {
        run: Box::new(move |ctx: &mut WriteCtx| {
            Box::pin(async move {
                let settled = super::steps::jobs::jobs_settle(ctx, jobs).await;
                if let Err(e) = &settled {
                    tracing::error!(error = %e, "settling jobs after a shared batch");
                }
                Finish {
                    ok: settled.is_ok(),
                    reply: Box::new(|_| {}),
                }
            })
        }),
        hint: None,
        shared: false,
    }
}

/// Runs a batch in one transaction. Operations check before they write (a refused operation
/// writes nothing), so no savepoint is needed per operation; savepoints would copy every page
/// an operation touches into a sub-journal (SQLite) or open a subtransaction each
/// (PostgreSQL). If an operation fails after writing anyway (a database error, or a bug), the
/// whole transaction is rolled back: the operations before it are answered "rolled back,
/// retry" and the ones after it run in a fresh transaction. On PostgreSQL a statement that
/// fails ends the transaction's usefulness (every later statement fails), so a failed statement
/// counts as breaking the batch as well, written or not.
///
/// On PostgreSQL each batch first takes the claims lock (`steps::graph::CLAIM_LOCK`, see
/// [`begin_postgres`]). A shared batch (claims, starts and completions only, no keyed task
/// pending) runs beside other replicas' shared batches: its claims pass over keyed tasks, its
/// jobs' counters are added at the commit in job id order, and the jobs its counters' write
/// finds ready to settle are settled right after the commit, in an exclusive batch of its own
/// (a batch beside it may have finished their other tasks). An exclusive batch runs alone, as
/// every batch did before. A shared batch that moves a job mid-batch (its first claim, a settle
/// from its copy) holds that job's row until its commit: two such batches that each also write
/// the other's job can deadlock, and PostgreSQL undoes one (its callers are answered 503,
/// retry). The events of the batch's operations are written with its `COMMIT`, under the event
/// append lock taken there (`events::events_commit_sql`), so event ids are handed out in commit
/// order, with one notification for the other replicas.
pub(crate) async fn run_batch(
    ctx: &mut WriteCtx,
    batch: Vec<Job>,
    publisher: &Publisher,
) -> std::result::Result<(), DbError> {
    // The operations whose first step is done ahead run first (see `ahead.rs`), so that they
    // change the database in the order their events say. Every operation of a batch was
    // submitted before any was answered: this order is one they could have run in.
    let mut batch = batch;
    batch.sort_by_key(|j| j.hint.is_none());
    let mut pending: std::collections::VecDeque<Job> = batch.into();
    loop {
        let begun = match ctx.backend {
            Backend::Sqlite => ctx.db.execute("BEGIN IMMEDIATE", &[]).await.map(|_| ()),
            Backend::Postgres => {
                let shared = pending.iter().all(|j| j.shared);
                begin_postgres(ctx, shared).await.map(|shared| {
                    ctx.shared = shared;
                    ctx.db.defer(shared);
                })
            }
        };
        // What the operations' hints let the batch do ahead, in set statements (`ahead.rs`).
        ctx.now = ctx.clock.now_ms();
        let begun = match begun {
            Ok(()) => {
                let hints: Vec<&Hint> = pending.iter().filter_map(|j| j.hint.as_ref()).collect();
                prepare(ctx, &hints).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = begun {
            // Dropping the jobs answers their callers with "the writer stopped before answering".
            drop(pending);
            ctx.ahead.clear();
            let _ = ctx.db.execute("ROLLBACK", &[]).await;
            return Err(e);
        }
        let mut replies: Vec<Reply> = Vec::new();
        let mut work_added = false;
        let mut broken = false;
        ctx.drafts.clear();
        while let Some(job) = pending.pop_front() {
            ctx.now = ctx.clock.now_ms();
            ctx.work_added = false;
            let (writes_before, errors_before) = (ctx.db.writes(), ctx.db.errors());
            let drafts_before = ctx.drafts.len();
            let finish = (job.run)(ctx).await;
            if !finish.ok {
                ctx.drafts.truncate(drafts_before);
            }
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
            let wrote = ctx.db.writes() != writes_before;
            if (!finish.ok && wrote) || ctx.db.errors() != errors_before {
                tracing::error!(
                    "an operation failed after writing (or a PostgreSQL statement failed); rolling back its batch"
                );
                let _ = ctx.db.execute("ROLLBACK", &[]).await;
                (finish.reply)(None);
                for r in replies.drain(..) {
                    r(Some(&DbError::RolledBack));
                }
                broken = true;
                break;
            }
            if finish.ok {
                work_added |= ctx.work_added;
            }
            replies.push(finish.reply);
        }
        if broken {
            continue;
        }
        // Every row changed ahead belongs to an operation that took it; one left over (a bug)
        // would be committed without its events or its answer.
        let mut flushed = match ctx.ahead.is_empty() {
            true => Ok(()),
            false => {
                tracing::error!(
                    "rows changed ahead were not taken by their operations; rolling back the batch"
                );
                ctx.ahead.clear();
                Err(DbError::RolledBack)
            }
        };
        // The batch's events: on SQLite now, 64 rows a statement (one statement per operation
        // cost a quarter of the writer's time under load); PostgreSQL writes them with its
        // `COMMIT`.
        let mut events = Vec::new();
        if flushed.is_ok() && ctx.backend == Backend::Sqlite {
            flushed = events_flush(ctx).await.map(|written| events = written);
        }
        // The jobs' counters kept in memory (`counters.rs`): on SQLite now, on PostgreSQL with
        // the commit, before the batch's events.
        let mut write_back = String::new();
        let mut drafts = Vec::new();
        if flushed.is_ok() {
            flushed = match ctx.backend {
                Backend::Sqlite => ctx.db.write_back().await,
                Backend::Postgres => {
                    drafts = ctx.take_drafts();
                    ctx.db
                        .write_back_sql(ctx.shared)
                        .map(|sql| write_back = sql)
                }
            };
        }
        if let Err(e) = flushed {
            let _ = ctx.db.execute("ROLLBACK", &[]).await;
            for r in replies {
                r(Some(&e));
            }
            return Err(e);
        }
        let commit = commit_sql(publisher, &write_back, &drafts, work_added);
        // Whatever goes with the `COMMIT` may return rows (the events' ids, the jobs to settle).
        let committed = match commit.as_ref() {
            "COMMIT" => ctx.db.execute(&commit, &[]).await.map(|_| Vec::new()),
            _ => ctx.db.fetch(&commit, &[]).await,
        };
        let rows = match committed {
            Ok(rows) => rows,
            Err(e) => {
                let _ = ctx.db.execute("ROLLBACK", &[]).await;
                for r in replies {
                    r(Some(&e));
                }
                return Err(e);
            }
        };
        crate::telemetry::batch_committed(replies.len());
        for r in replies {
            r(None);
        }
        match rows.iter().find_map(|r| r.get::<i64>("last_event").ok()) {
            Some(last) => events.extend(events_committed(drafts, last)),
            // Committed, but with ids not read back: the pump reads them from the table
            // (they do not follow what it published last).
            None if !drafts.is_empty() => {
                tracing::error!("a batch's events were committed without their ids read back")
            }
            None => {}
        }
        publisher.publish(events, work_added);
        let settle: Vec<uuid::Uuid> = rows
            .iter()
            .filter_map(|r| r.get::<String>("settle").ok())
            .filter_map(|id| uuid::Uuid::parse_str(&id).ok())
            .collect();
        if settle.is_empty() {
            return Ok(());
        }
        pending.push_back(settle_job(settle));
    }
}
