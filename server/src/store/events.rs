//! Events: appended inside the operation that caused them, read back by id for replay.

use agora_shared::{Event, EventKind};
use serde_json::Value;
use uuid::Uuid;

use super::db::ExecExt;
use super::rows::{ts, EventRow};
use super::sql::EVENT_COLUMNS;
use super::{Store, WriteCtx};
use crate::args;
use crate::error::Result;

/// An event to append.
pub struct EventDraft {
    pub kind: EventKind,
    pub job_id: Option<Uuid>,
    pub task_id: Option<Uuid>,
    pub agent_id: Option<Uuid>,
    pub data: Value,
}

impl EventDraft {
    pub fn new(kind: EventKind, data: Value) -> Self {
        EventDraft {
            kind,
            job_id: None,
            task_id: None,
            agent_id: None,
            data,
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
}

/// Appends an event in the current operation; it is published after the commit.
pub async fn event_insert(ctx: &mut WriteCtx, draft: EventDraft) -> Result<()> {
    let (id,): (i64,) = ctx
        .db
        .one(
            "INSERT INTO events (job_id, task_id, agent_id, kind, data, at) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            args![
                draft.job_id.map(|u| u.to_string()),
                draft.task_id.map(|u| u.to_string()),
                draft.agent_id.map(|u| u.to_string()),
                draft.kind.as_str(),
                draft.data.to_string(),
                ctx.now
            ],
        )
        .await?;
    ctx.emitted(Event {
        id,
        job_id: draft.job_id,
        task_id: draft.task_id,
        agent_id: draft.agent_id,
        kind: draft.kind,
        data: draft.data,
        at: ts(ctx.now),
    });
    Ok(())
}

/// Which events to read: those after `after`, optionally of one job, oldest first.
pub struct EventListParams {
    pub job_id: Option<Uuid>,
    pub after: i64,
    pub limit: u32,
}

impl Store {
    pub async fn event_list(&self, p: EventListParams) -> Result<Vec<Event>> {
        let rows: Vec<EventRow> = match p.job_id {
            Some(job) => {
                self.read_all(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE job_id = $1 AND id > $2 ORDER BY id LIMIT $3"
                ), args![job.to_string(), p.after, i64::from(p.limit)])
                .await?
            }
            None => {
                self.read_all(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE id > $1 ORDER BY id LIMIT $2"
                ), args![p.after, i64::from(p.limit)])
                .await?
            }
        };
        rows.into_iter().map(EventRow::into_event).collect()
    }

    /// The newest event id, 0 when there is none.
    pub async fn event_last_id(&self) -> Result<i64> {
        let (id,): (Option<i64>,) = self.read_one("SELECT MAX(id) FROM events", &[]).await?;
        Ok(id.unwrap_or(0))
    }
}
