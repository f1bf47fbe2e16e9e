//! The scheduler: every `SCHEDULER_INTERVAL_SECS` it fails attempts past their deadline, ends
//! deliveries past their lease, marks stale agents offline (taking back what they were offered
//! over WebSocket), repairs job counters and fails jobs whose approval window ran out; once a
//! minute it samples the queue depth and the
//! agents online for the charts. Each sweep is one idempotent transaction, so several replicas
//! may run it at once.

use std::time::Duration;

use tokio::sync::watch;

use crate::config::Config;
use crate::store::Store;

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    pub tasks_timed_out: usize,
    pub leases_expired: usize,
    pub heartbeats_lost: usize,
    pub agents_offline: usize,
    pub tasks_recovered: usize,
    pub jobs_settled: usize,
    pub approvals_expired: usize,
}

/// One pass of every sweep, at the current time. Tests call this directly.
pub async fn run_once(store: &Store, agent_stale: Duration) -> crate::error::Result<SweepReport> {
    let expired = store.tasks_expire().await?;
    let stale_before =
        store.clock().now_ms() - i64::try_from(agent_stale.as_millis()).unwrap_or(i64::MAX / 2);
    let stale = store.agents_mark_stale(stale_before).await?;
    let jobs_settled = store.jobs_sync().await?;
    let approvals_expired = store.jobs_expire_approvals().await?;
    Ok(SweepReport {
        tasks_timed_out: expired.timed_out,
        leases_expired: expired.leases_expired,
        heartbeats_lost: expired.heartbeats_lost,
        agents_offline: stale.agents_offline,
        tasks_recovered: stale.tasks_recovered,
        jobs_settled,
        approvals_expired,
    })
}

/// Runs the sweeps until shutdown.
pub async fn run(
    store: Store,
    config: std::sync::Arc<Config>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(config.scheduler_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sampled_minute = None;
    let mut trim = crate::memory::QuietTrim::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        match run_once(&store, config.agent_stale()).await {
            Ok(r) if r != SweepReport::default() => tracing::info!(?r, "scheduler sweep"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "scheduler sweep failed; will retry"),
        }
        crate::telemetry::upkeep();
        let minute = store.clock().minute();
        if sampled_minute != Some(minute) {
            match store.stats_sample().await {
                Ok(()) => sampled_minute = Some(minute),
                Err(e) => tracing::warn!(error = %e, "stats sample failed; will retry"),
            }
            if let Err(e) = store.idempotency_expire().await {
                tracing::warn!(error = %e, "could not forget expired idempotency keys");
            }
        }
        if let Ok(newest) = store.event_last_id().await {
            let tick = trim.tick(newest);
            let started = std::time::Instant::now();
            // At every quiet tick, not only while trimming: a connection busy with another
            // read during the trim is closed at a later tick, and what a busy writer's caches
            // took again since the last tick is given back.
            if tick.quiet {
                crate::memory::drop_caches();
            }
            let readers_closed = match tick.quiet {
                true => store.readers_close_idle().await,
                false => 0,
            };
            if tick.trim || readers_closed > 0 {
                let gave_back = crate::memory::give_back() || readers_closed > 0;
                trim.trimmed(gave_back);
                tracing::debug!(took = ?started.elapsed(), gave_back, readers_closed, "free memory given back");
            }
        }
    }
}
