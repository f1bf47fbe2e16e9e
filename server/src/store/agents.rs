//! Agents: registration, heartbeats (any authenticated call is one), unregistering, and the
//! stale-agent sweep.

use agora_shared::{
    Agent, AgentNamed, AgentOffline, AgentRegistered, AgentRolesChanged, AgentStatus, EventData,
    Page,
};
use uuid::Uuid;

use super::db::{Exec, ExecExt};
use super::error::{Result, StoreError};
use super::events::{event_insert, EventDraft};
use super::rows::AgentRow;
use super::rows::TaskRow;
use super::sql::{
    for_key_update, for_update, for_update_skip_locked, ACTIVE_TASKS, AGENT_COLUMNS, TASK_COLUMNS,
};
use super::steps::agents::agent_fetch;
use super::steps::tasks::{task_fail_attempt, task_release, FailCause};
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

/// An operator sets the agent's roles (the whole set).
pub(crate) async fn agent_set_roles(
    ctx: &mut WriteCtx,
    id: Uuid,
    mut roles: Vec<agora_shared::Role>,
) -> Result<Agent> {
    roles.sort_unstable();
    roles.dedup();
    let row = agent_fetch(ctx, id).await?;
    let text = serde_json::to_string(&roles).map_err(anyhow::Error::from)?;
    let row: AgentRow = ctx
        .db
        .one(
            &format!("UPDATE agents SET roles = $2 WHERE id = $1 RETURNING {AGENT_COLUMNS}"),
            args![&row.id, text],
        )
        .await?;
    let data = EventData::AgentRolesChanged(AgentRolesChanged {
        name: row.name.clone(),
        roles,
    });
    event_insert(ctx, EventDraft::new(data).agent(Some(id))).await?;
    row.into_agent()
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
