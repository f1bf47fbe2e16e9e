//! Counts for `/api/stats`, the per-minute series of `/api/stats/series` and the samples the
//! scheduler keeps for it.

use std::collections::{BTreeMap, HashMap};

use agora_shared::{
    waiting_for, CapabilityWait, Stats, StatsPoint, StatsSeries, SERIES_KEPT_MINUTES,
};

use super::clock::MINUTE_MS;
use super::db::Exec;
use super::error::Result;
use super::writer::WriteCtx;
use super::Store;
use crate::args;

const PENDING: &str = "SELECT COUNT(*) FROM tasks WHERE status = 'pending'";
const ONLINE: &str =
    "SELECT COUNT(*) FROM agents WHERE status = 'online' AND unregistered_at IS NULL";

/// Scheduler, once a minute: the queue depth and the agents online, for the charts. A second
/// sample in the same minute (another replica's) replaces the first; samples older than
/// [`SERIES_KEPT_MINUTES`] go.
pub(crate) async fn stats_sample(ctx: &mut WriteCtx) -> Result<()> {
    let minute = ctx.clock.minute();
    ctx.db
        .execute(
            &format!(
                "INSERT INTO stats_samples (minute, pending, agents_online) VALUES ($1, ({PENDING}), ({ONLINE})) \
                 ON CONFLICT (minute) DO UPDATE SET pending = excluded.pending, agents_online = excluded.agents_online"
            ),
            args![minute],
        )
        .await?;
    ctx.db
        .execute(
            "DELETE FROM stats_samples WHERE minute < $1",
            args![minute - SERIES_KEPT_MINUTES],
        )
        .await?;
    Ok(())
}

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
        let since = self.clock().now_ms() - MINUTE_MS;
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
        let waiting_for_capabilities = self.capability_waits().await?;
        Ok(Stats {
            agents_online: agents.get("online").copied().unwrap_or_default(),
            agents_total: agents.values().sum(),
            jobs: count(jobs),
            tasks: count(tasks),
            tasks_completed_last_minute: u64::try_from(recent).unwrap_or_default(),
            last_event_id: self.event_last_id().await?,
            waiting_for_capabilities,
        })
    }

    /// The capability sets of the agents online (each distinct set once).
    pub(crate) async fn online_capabilities(&self) -> Result<Vec<Vec<String>>> {
        let rows: Vec<(String,)> = self
            .read_all(
                "SELECT DISTINCT capabilities FROM agents WHERE status = 'online' AND unregistered_at IS NULL",
                &[],
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(c,)| serde_json::from_str(&c).ok())
            .collect())
    }

    /// Pending tasks no online agent can take, by what they require.
    async fn capability_waits(&self) -> Result<Vec<CapabilityWait>> {
        let rows: Vec<(String, i64)> = self
            .read_all(
                "SELECT requires, COUNT(*) FROM tasks WHERE status = 'pending' AND requires IS NOT NULL \
                 GROUP BY requires ORDER BY requires",
                &[],
            )
            .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let online = self.online_capabilities().await?;
        Ok(rows
            .into_iter()
            .filter_map(|(requires, n)| {
                let requires: Vec<String> = serde_json::from_str(&requires).ok()?;
                waiting_for(&requires, &online)?;
                Some(CapabilityWait {
                    requires,
                    tasks: u64::try_from(n).unwrap_or_default(),
                })
            })
            .collect())
    }
}

impl Store {
    /// The last `minutes` minutes, a point each, the running minute last. Completed and failed
    /// come from `tasks.finished_at` (partial indexes), the gauges from the scheduler's samples,
    /// and the running minute's gauges are counted now.
    pub async fn stats_series(&self, minutes: u32) -> Result<StatsSeries> {
        let now = self.clock().minute();
        let first = now - i64::from(minutes) + 1;
        let since = first * MINUTE_MS;
        let finished: Vec<(String, i64, i64)> = self
            .read_all(
                &format!(
                    "SELECT 'completed', finished_at / {MINUTE_MS}, COUNT(*) FROM tasks \
                     WHERE status = 'completed' AND finished_at >= $1 GROUP BY finished_at / {MINUTE_MS} \
                     UNION ALL \
                     SELECT 'failed', finished_at / {MINUTE_MS}, COUNT(*) FROM tasks \
                     WHERE status = 'failed' AND finished_at >= $2 GROUP BY finished_at / {MINUTE_MS}"
                ),
                args![since, since],
            )
            .await?;
        let samples: Vec<(i64, i64, i64)> = self
            .read_all(
                "SELECT minute, pending, agents_online FROM stats_samples WHERE minute >= $1",
                args![first],
            )
            .await?;
        let (pending,): (i64,) = self.read_one(PENDING, &[]).await?;
        let (online,): (i64,) = self.read_one(ONLINE, &[]).await?;
        let mut counts: HashMap<(bool, i64), u64> = HashMap::new();
        for (status, minute, n) in finished {
            counts.insert((status == "completed", minute), to_u64(n));
        }
        let mut gauges: HashMap<i64, (u64, u64)> = samples
            .into_iter()
            .map(|(m, p, a)| (m, (to_u64(p), to_u64(a))))
            .collect();
        gauges.insert(now, (to_u64(pending), to_u64(online)));
        let points = (first..=now)
            .map(|m| StatsPoint {
                at: super::rows::ts(m * MINUTE_MS),
                completed: counts.get(&(true, m)).copied().unwrap_or(0),
                failed: counts.get(&(false, m)).copied().unwrap_or(0),
                pending: gauges.get(&m).map(|g| g.0),
                agents_online: gauges.get(&m).map(|g| g.1),
            })
            .collect();
        Ok(StatsSeries { minutes, points })
    }
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or_default()
}
