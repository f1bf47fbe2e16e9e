//! Events: appended inside the operation that caused them, read back by id for replay.

use agora_shared::{Event, EventData};
use uuid::Uuid;

use super::db::{Exec, ExecExt, Value};
use super::error::Result;
use super::rows::{ts, EventRow};
use super::sql::EVENT_COLUMNS;
use super::{Store, WriteCtx};
use crate::args;

/// An event to append.
pub struct EventDraft {
    pub payload: EventData,
    pub job_id: Option<Uuid>,
    pub task_id: Option<Uuid>,
    pub agent_id: Option<Uuid>,
}

impl EventDraft {
    pub fn new(payload: EventData) -> Self {
        EventDraft {
            payload,
            job_id: None,
            task_id: None,
            agent_id: None,
        }
    }

    pub fn job(mut self, id: Uuid) -> Self {
        self.job_id = Some(id);
        self
    }

    pub fn task(mut self, id: Uuid) -> Self {
        self.task_id = Some(id);
        self
    }

    pub fn agent(mut self, id: Option<Uuid>) -> Self {
        self.agent_id = id;
        self
    }

    /// The event as written, with its id and time (ms).
    fn into_event(self, id: i64, at: i64) -> Event {
        Event {
            id,
            job_id: self.job_id,
            task_id: self.task_id,
            agent_id: self.agent_id,
            payload: self.payload,
            at: ts(at),
        }
    }
}

/// Records an event of the current operation. It is written when the batch's operations have
/// run (SQLite, [`events_flush`]) or with the batch's `COMMIT` (PostgreSQL), dropped if the
/// operation fails, and published after the commit.
pub async fn event_insert(ctx: &mut WriteCtx, draft: EventDraft) -> Result<()> {
    ctx.drafted(draft);
    Ok(())
}

/// Most events in one INSERT (six arguments each).
const INSERT_ROWS: usize = 64;

/// SQLite: `INSERT INTO events … VALUES (…), (…)` for `n` events (1 to [`INSERT_ROWS`]),
/// rendered once per count: a batch's events go in as few statements as that allows.
fn insert_sql(n: usize) -> &'static str {
    static SQL: [std::sync::OnceLock<String>; INSERT_ROWS] =
        [const { std::sync::OnceLock::new() }; INSERT_ROWS];
    SQL[n.clamp(1, INSERT_ROWS) - 1].get_or_init(|| {
        let rows: Vec<String> = (0..n)
            .map(|r| format!("({})", super::sql::placeholders(6, r * 6 + 1)))
            .collect();
        format!(
            "INSERT INTO events (job_id, task_id, agent_id, kind, data, at) VALUES {}",
            rows.join(", ")
        )
    })
}

/// SQLite: the id of the last row the writer's connection inserted.
const LAST_INSERT_ID: &str = "SELECT last_insert_rowid()";

/// The advisory lock that orders event appends on PostgreSQL (an arbitrary constant).
const EVENT_APPEND_LOCK: i64 = 0x4147_4f52_4145_5654;

/// PostgreSQL: the last event id the sequence handed out (0 before the first), as `last`.
const LAST_EVENT_ID: &str =
    "SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END AS last FROM events_id_seq";

/// A PostgreSQL string literal of any text: `E'…'` with backslashes and quotes doubled, so it
/// reads the same whatever `standard_conforming_strings` says. A NUL, which no PostgreSQL text
/// can hold (and which would end the statement's text), becomes U+FFFD.
fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 3);
    out.push_str("E'");
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("''"),
            '\0' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn uuid_literal(id: Option<Uuid>) -> String {
    id.map_or_else(|| "NULL".to_string(), |id| format!("'{id}'"))
}

/// PostgreSQL: the statements that append a batch's events, sent with its `COMMIT` (one round
/// trip for the events, the notification and the commit). They take the append lock
/// ([`EVENT_APPEND_LOCK`], held until the commit ends), read the last id handed out, write the
/// events with the ids after it (in the order they were drafted), move the sequence past them
/// and announce the newest id (`notify`: the rest of the notification, see
/// `postgres::notification`). The id before the first comes back as `last_event`
/// ([`events_committed`] numbers the events from it). Ids are thus handed out in commit order:
/// a batch that holds the lock has seen every earlier holder's commit end. Only this last step of
/// a batch is serialised, not the whole batch. Empty when there is no event.
pub(crate) fn events_commit_sql(drafts: &[(EventDraft, i64)], notify: Option<&str>) -> String {
    if drafts.is_empty() {
        return String::new();
    }
    let n = drafts.len();
    let mut sql = format!(
        "SELECT pg_advisory_xact_lock({EVENT_APPEND_LOCK}); WITH l AS ({LAST_EVENT_ID}), \
         ins AS (INSERT INTO events (id, job_id, task_id, agent_id, kind, data, at) \
         SELECT l.last + v.n, v.job_id, v.task_id, v.agent_id, v.kind, v.data, v.at FROM l, (VALUES "
    );
    for (i, (draft, at)) in drafts.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!(
            "({}, {}::text, {}::text, {}::text, {}, {}, {at}::int8)",
            i + 1,
            uuid_literal(draft.job_id),
            uuid_literal(draft.task_id),
            uuid_literal(draft.agent_id),
            literal(draft.payload.kind().as_str()),
            literal(&draft.payload.data_json()),
        ));
    }
    sql.push_str(&format!(
        ") AS v(n, job_id, task_id, agent_id, kind, data, at)) \
         SELECT l.last AS last_event, setval('events_id_seq', l.last + {n})"
    ));
    if let Some(rest) = notify {
        sql.push_str(&format!(
            ", pg_notify('{}', (l.last + {n})::text || '{rest}')",
            super::postgres::CHANNEL
        ));
    }
    sql.push_str(" FROM l; ");
    sql
}

/// PostgreSQL: the batch's events as committed, numbered after `last` (the `last_event` that
/// [`events_commit_sql`] returned).
pub(crate) fn events_committed(drafts: Vec<(EventDraft, i64)>, last: i64) -> Vec<Event> {
    drafts
        .into_iter()
        .zip(last + 1..)
        .map(|((draft, at), id)| draft.into_event(id, at))
        .collect()
}

/// SQLite: writes the batch's events, when its operations have run, in the order they were
/// drafted (the one writer hands out ids in commit order), and returns them as written, to
/// publish after the commit. PostgreSQL writes a batch's events with its `COMMIT` instead
/// ([`events_commit_sql`]).
pub(crate) async fn events_flush(
    ctx: &mut WriteCtx,
) -> std::result::Result<Vec<Event>, super::db::DbError> {
    let drafts = ctx.take_drafts();
    let mut written = Vec::with_capacity(drafts.len());
    let mut drafts = drafts.into_iter().peekable();
    while drafts.peek().is_some() {
        let rows: Vec<(EventDraft, i64)> = drafts.by_ref().take(INSERT_ROWS).collect();
        let mut args = Vec::with_capacity(rows.len() * 6);
        for (draft, at) in &rows {
            args.extend([
                Value::from(draft.job_id),
                Value::from(draft.task_id),
                Value::from(draft.agent_id),
                Value::from(draft.payload.kind().as_str()),
                Value::from(draft.payload.data_json()),
                Value::from(*at),
            ]);
        }
        let inserted = ctx.db.execute(insert_sql(rows.len()), &args).await?;
        if inserted != rows.len() as u64 {
            return Err(super::db::DbError::Decode(
                format!("{inserted} rows written for {} events", rows.len()),
                "one row per event",
            ));
        }
        // The rows of one INSERT get consecutive ids, in row order (AUTOINCREMENT, one
        // writer), the last of them the connection's last insert id: no RETURNING (which
        // collects the rows in a temporary table of its own, a tenth of the events' cost).
        let (last,): (i64,) = ctx.db.one(LAST_INSERT_ID, &[]).await?;
        let first = last - rows.len() as i64 + 1;
        written.extend(
            rows.into_iter()
                .zip(first..)
                .map(|((draft, at), id)| draft.into_event(id, at)),
        );
    }
    Ok(written)
}

/// Which events to read: those after `after`, optionally of one job, oldest first.
pub struct EventListParams {
    pub job_id: Option<Uuid>,
    pub after: i64,
    pub limit: u32,
    /// Newest first (one job's events only).
    pub newest_first: bool,
}

/// Events after `after`, oldest first, straight from a pool (the PostgreSQL pump's read).
pub(crate) async fn read_events_after(
    pool: &sqlx::AnyPool,
    after: i64,
    limit: i64,
) -> Result<Vec<Event>> {
    let mut conn = pool.acquire().await?;
    let rows: Vec<EventRow> = ExecExt::all(
        &mut *conn,
        &format!("SELECT {EVENT_COLUMNS} FROM events WHERE id > $1 ORDER BY id LIMIT $2"),
        args![after, limit],
    )
    .await?;
    rows.into_iter().map(EventRow::into_event).collect()
}

impl Store {
    pub async fn event_list(&self, p: EventListParams) -> Result<Vec<Event>> {
        let Some(job) = p.job_id else {
            // The whole feed: the same read the PostgreSQL pump makes.
            return read_events_after(self.reader(), p.after, i64::from(p.limit)).await;
        };
        let rows: Vec<EventRow> = self
            .read_all(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE job_id = $1 AND id > $2 ORDER BY id {} LIMIT $3",
                    if p.newest_first { "DESC" } else { "ASC" }
                ),
                args![job, p.after, i64::from(p.limit)],
            )
            .await?;
        rows.into_iter().map(EventRow::into_event).collect()
    }

    /// The newest event id, 0 when there is none.
    pub async fn event_last_id(&self) -> Result<i64> {
        let (id,): (Option<i64>,) = self.read_one("SELECT MAX(id) FROM events", &[]).await?;
        Ok(id.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::literal;

    #[test]
    fn a_literal_doubles_quotes_and_backslashes_and_holds_no_nul() {
        assert_eq!(literal("plain"), "E'plain'");
        assert_eq!(literal("it's"), "E'it''s'");
        assert_eq!(literal(r"a\'b"), r"E'a\\''b'");
        assert_eq!(literal("$1 $$ ;"), "E'$1 $$ ;'");
        assert_eq!(literal("nul\0"), "E'nul\u{fffd}'");
    }
}
