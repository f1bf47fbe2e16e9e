//! Counts for `/api/stats` and the dashboard overview.

use std::collections::BTreeMap;

use agora_shared::Stats;

use super::error::Result;
use super::Store;
use crate::args;

impl Store {
    pub async fn stats(&self) -> Result<Stats> {
        let agents: Vec<(String, i64)> = self
            .read_all(
                "SELECT status, COUNT(*) FROM agents WHERE unregistered_at IS NULL GROUP BY status",
                &[],
            )
            .await?;
        let jobs: Vec<(String, i64)> = self
            .read_all("SELECT status, COUNT(*) FROM jobs GROUP BY status", &[])
            .await?;
        let tasks: Vec<(String, i64)> = self
            .read_all("SELECT status, COUNT(*) FROM tasks GROUP BY status", &[])
            .await?;
        let since = self.clock().now_ms() - 60_000;
        let (recent,): (i64,) = self
            .read_one(
                "SELECT COUNT(*) FROM tasks WHERE status = 'completed' AND finished_at >= $1",
                args![since],
            )
            .await?;
        let count = |rows: Vec<(String, i64)>| -> BTreeMap<String, u64> {
            rows.into_iter()
                .map(|(k, v)| (k, u64::try_from(v).unwrap_or_default()))
                .collect()
        };
        let agents = count(agents);
        Ok(Stats {
            agents_online: agents.get("online").copied().unwrap_or_default(),
            agents_total: agents.values().sum(),
            jobs: count(jobs),
            tasks: count(tasks),
            tasks_completed_last_minute: u64::try_from(recent).unwrap_or_default(),
            last_event_id: self.event_last_id().await?,
        })
    }
}
