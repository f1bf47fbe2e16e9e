//! Agent steps: fetch, and record that an agent was heard from.

use agora_shared::{AgentNamed, AgentStatus, EventData};
use uuid::Uuid;

use crate::args;
use crate::store::db::{Exec, ExecExt};
use crate::store::error::{Result, StoreError};
use crate::store::events::{event_insert, EventDraft};
use crate::store::rows::AgentRow;
use crate::store::sql::{for_key_share, for_update, AGENT_COLUMNS};
use crate::store::WriteCtx;

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

/// An agent's name, registered or not (a planner may have unregistered since its plan).
pub(crate) async fn agent_name(ctx: &mut WriteCtx, id: &str) -> Result<String> {
    let (name,): (String,) = ctx
        .db
        .one("SELECT name FROM agents WHERE id = $1", args![id])
        .await?;
    Ok(name)
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

/// Which of `agents` are registered, with their capabilities (as stored), holding their rows (on PostgreSQL, in id order) until the
/// transaction ends so that none can be unregistered in between: claims and offers check this
/// before they write, and take these locks before any task or job row.
pub(crate) async fn agents_registered(
    ctx: &mut WriteCtx,
    agents: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, String>> {
    let mut out = std::collections::HashMap::with_capacity(agents.len());
    let mut ids: Vec<Uuid> = agents.to_vec();
    ids.sort_unstable();
    ids.dedup();
    for chunk in ids.chunks(500) {
        let params: Vec<crate::store::db::Value> = chunk.iter().map(|id| (*id).into()).collect();
        let rows: Vec<(String, String)> = ctx
            .db
            .all(
                &format!(
                    "SELECT id, capabilities FROM agents WHERE id IN ({}) AND unregistered_at IS NULL ORDER BY id{}",
                    crate::store::sql::placeholders(chunk.len(), 1),
                    for_key_share(ctx.backend)
                ),
                &params,
            )
            .await?;
        for (id, capabilities) in rows {
            out.insert(crate::store::rows::uuid(&id)?, capabilities);
        }
    }
    Ok(out)
}

/// Whether one agent is registered (see [`agents_registered`]).
pub(crate) async fn agent_registered(ctx: &mut WriteCtx, id: Uuid) -> Result<bool> {
    Ok(agents_registered(ctx, &[id]).await?.contains_key(&id))
}
