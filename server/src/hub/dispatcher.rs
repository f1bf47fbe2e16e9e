//! The dispatcher: one task owns every free agent slot. When work may be pending it claims for
//! free slots in batches (one transaction per batch, the same claim statement as REST) and
//! sends each claimed task to its connection. It sleeps on a wake-up, never on a poll: a commit
//! that makes work pending wakes it, and a timer wakes it when the next task waiting out its
//! retry backoff becomes available. A re-check every few seconds is only a safety net.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::{ConnCmd, DispatchMsg};
use crate::store::Store;

/// Most claims in one transaction.
const BATCH: usize = 64;
/// Re-check for work this often even without a wake-up.
const SAFETY_RECHECK: Duration = Duration::from_secs(5);

struct Slotted {
    agent_id: Uuid,
    /// The agent asked for offers that start at once.
    auto_start: bool,
    free: i64,
    inbox: mpsc::Sender<ConnCmd>,
}

#[derive(Default)]
struct Slots {
    conns: HashMap<u64, Slotted>,
    /// Round-robin order of connections with free slots.
    ring: VecDeque<u64>,
    in_ring: HashSet<u64>,
}

impl Slots {
    /// Applies a slot message; true when it freed a slot. Work the last claim found for no one
    /// may suit this agent (tasks routed by capabilities), so a freed slot asks again.
    fn apply(&mut self, msg: DispatchMsg) -> bool {
        match msg {
            DispatchMsg::Capacity {
                conn_id,
                agent_id,
                auto_start,
                delta,
                inbox,
            } => {
                let entry = self.conns.entry(conn_id).or_insert_with(|| Slotted {
                    agent_id,
                    auto_start,
                    free: 0,
                    inbox,
                });
                entry.auto_start = auto_start;
                entry.free += delta;
                self.requeue(conn_id);
                delta > 0
            }
            DispatchMsg::Gone { conn_id } => {
                self.conns.remove(&conn_id);
                if self.in_ring.remove(&conn_id) {
                    self.ring.retain(|c| *c != conn_id);
                }
                false
            }
        }
    }

    /// Puts a connection back in the ring if it has free slots.
    fn requeue(&mut self, conn_id: u64) {
        if self.conns.get(&conn_id).is_some_and(|e| e.free > 0) && self.in_ring.insert(conn_id) {
            self.ring.push_back(conn_id);
        }
    }

    /// Up to `n` free slots, round-robin: an agent with several free slots comes round again
    /// after every other agent had its turn. The caller delivers, then requeues the picks.
    fn take(&mut self, n: usize) -> Vec<(u64, (Uuid, bool))> {
        let mut picked = Vec::new();
        let mut used: HashMap<u64, i64> = HashMap::new();
        while picked.len() < n {
            let Some(conn_id) = self.ring.pop_front() else {
                break;
            };
            self.in_ring.remove(&conn_id);
            let Some(entry) = self.conns.get(&conn_id) else {
                continue;
            };
            let u = used.entry(conn_id).or_default();
            if entry.free - *u > 0 {
                *u += 1;
                picked.push((conn_id, (entry.agent_id, entry.auto_start)));
                if entry.free - *u > 0 && self.in_ring.insert(conn_id) {
                    self.ring.push_back(conn_id);
                }
            }
        }
        picked
    }
}

/// `offering` is true from a claim that left more work for free slots until the dispatcher
/// finds nothing more to hand out (SSE segments wait for it: [`crate::segments::HOLD_MAX`]).
pub async fn run(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<DispatchMsg>,
    offering: watch::Sender<bool>,
    mut draining: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut slots = Slots::default();
    // Whether the last claim found nothing for any agent it asked for; cleared by every wake-up
    // and every freed slot.
    let mut queue_empty = false;
    // When the dispatcher last woke (work pending, a slot freed): offers are timed from it.
    let mut woke_at = std::time::Instant::now();
    // When the next task held back by its retry backoff becomes available.
    let mut backoff_ends: Option<tokio::time::Instant> = None;
    loop {
        if *draining.borrow() {
            // Draining: no more offers. Sockets release what they were offered.
            let _ = shutdown.changed().await;
            return;
        }
        let notified = store.work_available().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        while let Ok(msg) = rx.try_recv() {
            queue_empty &= !slots.apply(msg);
        }
        if !queue_empty {
            let picked = slots.take(BATCH);
            if !picked.is_empty() {
                let agents: Vec<(Uuid, bool)> = picked.iter().map(|(_, a)| *a).collect();
                match store.task_claim_many(agents).await {
                    Ok(batch) => {
                        let n = batch.claimed.iter().flatten().count();
                        crate::telemetry::claimed("push", n);
                        queue_empty = batch.queue_empty;
                        set(&offering, n > 0 && !queue_empty);
                        for ((conn_id, (agent_id, _)), task) in picked.iter().zip(batch.claimed) {
                            if let Some(task) = task {
                                deliver(&store, &mut slots, *conn_id, *agent_id, task).await;
                                crate::telemetry::offered(woke_at.elapsed());
                            }
                        }
                        if queue_empty {
                            backoff_ends = store.task_available_deadline().await;
                        }
                        for (conn_id, _) in picked {
                            slots.requeue(conn_id);
                        }
                        // Work that became pending while this batch was claimed and delivered
                        // must not be lost with the wake-up that announced it.
                        if notified.as_mut().now_or_never().is_some() {
                            queue_empty = false;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "dispatch claim failed; will retry");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                continue;
            }
        }
        set(&offering, false);
        // Biased: when a wake-up and a slot message are ready together, the wake-up is taken
        // (the message waits in the channel); a random pick would drop the wake-up with the
        // `notified` future and leave the work to the safety re-check.
        tokio::select! {
            biased;
            _ = &mut notified => queue_empty = false,
            msg = rx.recv() => match msg {
                Some(m) => queue_empty &= !slots.apply(m),
                None => return,
            },
            _ = tokio::time::sleep_until(backoff_ends.unwrap_or_else(tokio::time::Instant::now)), if backoff_ends.is_some() => {
                backoff_ends = None;
                queue_empty = false;
            }
            _ = tokio::time::sleep(SAFETY_RECHECK) => queue_empty = false,
            _ = draining.changed() => {}
            _ = shutdown.changed() => return,
        }
        woke_at = std::time::Instant::now();
    }
}

fn set(offering: &watch::Sender<bool>, now: bool) {
    offering.send_if_modified(|was| std::mem::replace(was, now) != now);
}

/// Hands a claimed task to its connection; if the connection is gone, the task goes back.
async fn deliver(
    store: &Store,
    slots: &mut Slots,
    conn_id: u64,
    agent_id: Uuid,
    task: agora_shared::ClaimedTask,
) {
    let task_id = task.task.id;
    let held = crate::store::Held::of(&task);
    if let Some(entry) = slots.conns.get_mut(&conn_id) {
        entry.free -= 1;
        if entry.inbox.try_send(ConnCmd::Offer(Box::new(task))).is_ok() {
            return;
        }
    }
    if let Err(e) = store
        .tasks_abandon(
            agent_id,
            vec![held],
            "its agent disconnected before the offer".into(),
            false,
        )
        .await
    {
        tracing::warn!(error = %e, %task_id, "could not release an undelivered offer");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(slots: &mut Slots, conn_id: u64, delta: i64) -> mpsc::Receiver<ConnCmd> {
        let (tx, rx) = mpsc::channel(8);
        slots.apply(DispatchMsg::Capacity {
            conn_id,
            agent_id: Uuid::from_u128(conn_id as u128),
            auto_start: false,
            delta,
            inbox: tx,
        });
        rx
    }

    #[test]
    fn takes_round_robin_within_free_slots() {
        let mut s = Slots::default();
        let _a = cap(&mut s, 1, 2);
        let _b = cap(&mut s, 2, 1);
        let picked: Vec<u64> = s.take(10).into_iter().map(|p| p.0).collect();
        assert_eq!(picked, vec![1, 2, 1]);
        // Delivered picks use the slots up.
        for c in [1, 2, 1] {
            s.conns.get_mut(&c).unwrap().free -= 1;
        }
        for c in [1, 2] {
            s.requeue(c);
        }
        assert!(s.take(10).is_empty());
        let _ = cap(&mut s, 2, 1);
        assert_eq!(
            s.take(10).into_iter().map(|p| p.0).collect::<Vec<_>>(),
            vec![2]
        );
    }

    #[test]
    fn undelivered_picks_come_back() {
        let mut s = Slots::default();
        let _a = cap(&mut s, 1, 1);
        assert_eq!(s.take(10).len(), 1);
        assert!(s.take(10).is_empty(), "picked, not yet delivered");
        s.requeue(1);
        assert_eq!(
            s.take(10).len(),
            1,
            "the claim found nothing, so the slot is still free"
        );
    }

    #[test]
    fn gone_connections_leave_the_ring() {
        let mut s = Slots::default();
        let _a = cap(&mut s, 1, 3);
        s.apply(DispatchMsg::Gone { conn_id: 1 });
        assert!(s.take(5).is_empty());
    }
}
