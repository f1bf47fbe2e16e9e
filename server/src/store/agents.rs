//! Agents: registration, heartbeats (any authenticated call is one), unregistering, and the
//! stale-agent sweep.

use agora_shared::{
    Agent, AgentNamed, AgentOffline, AgentRegistered, AgentStatus, EventData, Page,
};
use uuid::Uuid;

use super::db::ExecExt;
use super::error::{Result, StoreError};
use super::events::{event_insert, EventDraft};
use super::rows::AgentRow;
use super::rows::TaskRow;
use super::sql::{
    for_key_share, for_key_update, for_update, for_update_skip_locked, ACTIVE_TASKS, AGENT_COLUMNS,
    TASK_COLUMNS,
};
use super::tasks::{task_fail_attempt, task_release, FailCause};
use super::{Store, WriteCtx};
use crate::args;

pub struct AgentRegisterParams {
    pub id: Uuid,
    pub name: String,
    pub capabilities: Vec<String>,
    pub token_hash: String,
}

/// What the stale sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StaleSweep {
    pub agents_offline: usize,
    pub tasks_recovered: usize,
}

pub(crate) async fn agent_fetch(ctx: &mut WriteCtx, id: Uuid) -> Result<AgentRow> {
    ctx.db
        .opt(
            &format!(
                "SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1 AND unregistered_at IS NULL{}",
                for_update(ctx.backend)
            ),
            args![id.to_string()],
        )
        .await?
        .ok_or_else(|| StoreError::not_found("agent", id))
}

/// Records that the agent was heard from now; an offline agent comes back online.
pub(crate) async fn agent_touch(ctx: &mut WriteCtx, id: Uuid) -> Result<AgentRow> {
    let mut row = agent_fetch(ctx, id).await?;
    let was_offline = row.status == AgentStatus::Offline.as_str();
    // Skip the write when the last one is recent: saves a row update per call under load.
    if was_offline || ctx.now - row.last_seen_at >= 1000 {
        ctx.db
            .execute(
                "UPDATE agents SET last_seen_at = $2, status = 'online' WHERE id = $1",
                args![id.to_string(), ctx.now],
            )
            .await?;
        row.last_seen_at = ctx.now;
        row.status = AgentStatus::Online.as_str().to_string();
    }
    if was_offline {
        let data = EventData::AgentOnline(AgentNamed {
            name: row.name.clone(),
        });
        event_insert(ctx, EventDraft::new(data).agent(Some(id))).await?;
    }
    Ok(row)
}

/// Records that the agent was heard from, cheaply: the writer remembers when it last wrote
/// `last_seen_at` for each agent and skips the row for a second (the same granularity as
/// [`agent_touch`]), so a busy agent costs no extra statement per call.
pub(crate) async fn agent_seen(ctx: &mut WriteCtx, id: Uuid) -> Result<()> {
    if ctx.seen_recently(id) {
        return Ok(());
    }
    agent_touch(ctx, id).await?;
    ctx.mark_seen(id);
    Ok(())
}

/// Which of `agents` are registered, holding their rows (on PostgreSQL, in id order) until the
/// transaction ends so that none can be unregistered in between: claims and offers check this
/// before they write, and take these locks before any task or job row.
pub(crate) async fn agents_registered(
    ctx: &mut WriteCtx,
    agents: &[Uuid],
) -> Result<std::collections::HashSet<Uuid>> {
    let mut out = std::collections::HashSet::with_capacity(agents.len());
    let mut ids: Vec<Uuid> = agents.to_vec();
    ids.sort_unstable();
    ids.dedup();
    for chunk in ids.chunks(500) {
        let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let params: Vec<super::db::Value> = chunk.iter().map(|id| (*id).into()).collect();
        let rows: Vec<(String,)> = ctx
            .db
            .all(
                &format!(
                    "SELECT id FROM agents WHERE id IN ({}) AND unregistered_at IS NULL ORDER BY id{}",
                    marks.join(", "),
                    for_key_share(ctx.backend)
                ),
                &params,
            )
            .await?;
        for (id,) in rows {
            out.insert(super::rows::uuid(&id)?);
        }
    }
    Ok(out)
}

/// Whether one agent is registered (see [`agents_registered`]).
pub(crate) async fn agent_registered(ctx: &mut WriteCtx, id: Uuid) -> Result<bool> {
    Ok(agents_registered(ctx, &[id]).await?.contains(&id))
}

/// Which of an agent's active tasks a recovery takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Recover {
    /// Every claimed or running task (unregistering).
    All,
    /// Only tasks delivered over its WebSocket, whose socket is their heartbeat (a stale
    /// agent); a REST agent's tasks keep their own leases, however long it thinks.
    Offered,
}

/// Active (claimed or running) tasks of an agent, for recovery.
async fn agent_active_tasks(
    ctx: &mut WriteCtx,
    id: Uuid,
    which: Recover,
    skip_locked: bool,
) -> Result<Vec<TaskRow>> {
    let lock = if skip_locked {
        for_update_skip_locked(ctx.backend)
    } else {
        for_update(ctx.backend)
    };
    let only = match which {
        Recover::All => "",
        Recover::Offered => " AND via = 'offer'",
    };
    Ok(ctx.db.all(&format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE agent_id = $1 AND status IN {ACTIVE_TASKS}{only} ORDER BY idx{lock}"
    ), args![id.to_string()])
    .await?)
}

pub(crate) async fn agent_insert(ctx: &mut WriteCtx, p: AgentRegisterParams) -> Result<Agent> {
    let caps = serde_json::to_string(&p.capabilities).map_err(anyhow::Error::from)?;
    let row: AgentRow = ctx.db.one(&format!(
        "INSERT INTO agents (id, name, status, capabilities, token_hash, registered_at, last_seen_at) \
         VALUES ($1, $2, 'online', $3, $4, $5, $5) RETURNING {AGENT_COLUMNS}"
    ), args![p.id.to_string(), &p.name, caps, &p.token_hash, ctx.now])
    .await?;
    let data = EventData::AgentRegistered(AgentRegistered {
        name: p.name.clone(),
        capabilities: p.capabilities.clone(),
    });
    event_insert(ctx, EventDraft::new(data).agent(Some(p.id))).await?;
    row.into_agent()
}

pub(crate) async fn agent_unregister(ctx: &mut WriteCtx, id: Uuid) -> Result<Agent> {
    ctx.forget_seen(id);
    // The strong lock first: a claim for this agent waits for the commit, then finds it gone.
    let row: AgentRow = ctx
        .db
        .opt(
            &format!(
                "SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1 AND unregistered_at IS NULL{}",
                for_key_update(ctx.backend)
            ),
            args![id.to_string()],
        )
        .await?
        .ok_or_else(|| StoreError::not_found("agent", id))?;
    for task in agent_active_tasks(ctx, id, Recover::All, false).await? {
        task_release(ctx, task, "its agent unregistered").await?;
    }
    ctx.db.execute("UPDATE agents SET status = 'offline', token_hash = NULL, unregistered_at = $2 WHERE id = $1", args![id.to_string(), ctx.now])
    .await?;
    let data = EventData::AgentUnregistered(AgentNamed {
        name: row.name.clone(),
    });
    event_insert(ctx, EventDraft::new(data).agent(Some(id))).await?;
    let mut agent = row.into_agent()?;
    agent.status = AgentStatus::Offline;
    Ok(agent)
}

/// Agents not heard from since `stale_before` go offline. Tasks offered over their WebSocket
/// count a failed attempt and go back to pending (or fail for good), so a task that kills every
/// agent ends; tasks they claimed over REST are left to their leases (a model may think for
/// minutes between calls).
pub(crate) async fn agents_mark_stale(ctx: &mut WriteCtx, stale_before: i64) -> Result<StaleSweep> {
    let stale: Vec<AgentRow> = ctx.db.all(&format!(
        "SELECT {AGENT_COLUMNS} FROM agents WHERE status = 'online' AND last_seen_at < $1 ORDER BY last_seen_at{}",
        for_update_skip_locked(ctx.backend)
    ), args![stale_before])
    .await?;
    let mut sweep = StaleSweep::default();
    for agent in stale {
        let id = super::rows::uuid(&agent.id)?;
        ctx.forget_seen(id);
        ctx.db
            .execute(
                "UPDATE agents SET status = 'offline' WHERE id = $1",
                args![&agent.id],
            )
            .await?;
        let data = EventData::AgentOffline(AgentOffline {
            name: agent.name.clone(),
            last_seen_at: super::rows::ts(agent.last_seen_at),
        });
        event_insert(ctx, EventDraft::new(data).agent(Some(id))).await?;
        for task in agent_active_tasks(ctx, id, Recover::Offered, true).await? {
            task_fail_attempt(ctx, task, FailCause::AgentLost).await?;
            sweep.tasks_recovered += 1;
        }
        sweep.agents_offline += 1;
    }
    Ok(sweep)
}

impl Store {
    /// Registered agents, online first, then the most recently seen; `status` filters.
    pub async fn agent_list(
        &self,
        status: Option<AgentStatus>,
        limit: u32,
        offset: u64,
    ) -> Result<Page<Agent>> {
        let status = status.map(AgentStatus::as_str);
        const FILTER: &str = "unregistered_at IS NULL AND ($1 IS NULL OR status = $1)";
        let (total,): (i64,) = self
            .read_one(
                &format!("SELECT COUNT(*) FROM agents WHERE {FILTER}"),
                args![status],
            )
            .await?;
        let rows: Vec<AgentRow> = self
            .read_all(
                &format!(
                    "SELECT {AGENT_COLUMNS} FROM agents WHERE {FILTER} \
                     ORDER BY CASE WHEN status = 'online' THEN 0 ELSE 1 END, last_seen_at DESC, id \
                     LIMIT $2 OFFSET $3"
                ),
                args![
                    status,
                    i64::from(limit),
                    i64::try_from(offset).unwrap_or(i64::MAX)
                ],
            )
            .await?;
        super::rows::page(rows, AgentRow::into_agent, total, limit, offset)
    }

    pub async fn agent_get(&self, id: Uuid) -> Result<Agent> {
        let row: Option<AgentRow> = self
            .read_opt(
                &format!(
                    "SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1 AND unregistered_at IS NULL"
                ),
                args![id.to_string()],
            )
            .await?;
        row.ok_or_else(|| StoreError::not_found("agent", id))?
            .into_agent()
    }

    /// The registered agent holding the token with this hash.
    pub async fn agent_id_by_token_hash(&self, hash: &str) -> Result<Option<Uuid>> {
        let row: Option<(String,)> = self
            .read_opt("SELECT id FROM agents WHERE token_hash = $1", args![hash])
            .await?;
        row.map(|(id,)| super::rows::uuid(&id)).transpose()
    }
}
