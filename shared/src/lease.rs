//! Leases: every delivery of a task (a REST claim, a WebSocket offer) is a lease of its own, with
//! a random `lease_id` and an expiry. These are the rules over them, as plain functions:
//!
//! - which lease a report may name ([`check_lease`]);
//! - when a lease runs out: a claim not started within `CLAIM_LEASE_SECS`, a started task at its
//!   running deadline, or sooner when the agent asked for a heartbeat ([`running_lease_expiry`]);
//! - how long a failed attempt waits before it is claimable again ([`retry_backoff_ms`]);
//! - when a task has been delivered too often and fails for good ([`delivery_limit_reached`]).
//!
//! Anchors: SQS (receipt handle, visibility timeout, `maxReceiveCount`), Temporal (task token,
//! heartbeat timeout), River (attempt backoff).

use uuid::Uuid;

use crate::task_rules::{after_failure, TaskStatus};

/// `CLAIM_LEASE_SECS`: a REST claim not started (nor reported on) within this goes back to pending.
pub const DEFAULT_CLAIM_LEASE_SECS: u64 = 60;
/// `MAX_DELIVERIES`: a task delivered this often without finishing fails for good.
pub const DEFAULT_MAX_DELIVERIES: u32 = 10;
/// `RETRY_BACKOFF_SECS`: the base of the exponential wait after a failed attempt.
pub const DEFAULT_RETRY_BACKOFF_SECS: f64 = 2.0;
/// No failed attempt waits longer than this (10 minutes).
pub const MAX_BACKOFF_MS: i64 = 600_000;
/// The jitter adds up to this share of the delay (never subtracts: a task never comes back
/// before its exponential step).
pub const BACKOFF_JITTER: f64 = 0.25;
/// The error of a task failed for good by the delivery limit (the dead letter).
pub const DELIVERY_LIMIT_ERROR: &str = "delivery limit reached";
/// Bounds of `heartbeat_secs` on start.
pub const MIN_HEARTBEAT_SECS: u64 = 1;
pub const MAX_HEARTBEAT_SECS: u64 = 86_400;
/// Most characters of a claim's `request_id`.
pub const MAX_REQUEST_ID: usize = 128;

/// A report named a lease that is not the task's current one: the delivery it belongs to has
/// ended (released, expired, revoked, or handed to another agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("lease {named} of task {task} has ended; the task was released, expired or delivered again (drop this work)")]
pub struct LeaseLost {
    pub task: Uuid,
    pub named: Uuid,
}

/// A report may name a lease; when it does, it must be the task's current one. Without one the
/// calling agent's current lease applies (ownership is checked apart).
pub fn check_lease(
    task: Uuid,
    current: Option<Uuid>,
    named: Option<Uuid>,
) -> Result<(), LeaseLost> {
    match named {
        None => Ok(()),
        Some(named) if current == Some(named) => Ok(()),
        Some(named) => Err(LeaseLost { task, named }),
    }
}

/// When a started task's lease runs out: its running deadline, or `heartbeat_ms` from now if the
/// agent asked for heartbeats and that comes first.
pub fn running_lease_expiry(now_ms: i64, deadline_ms: i64, heartbeat_ms: Option<i64>) -> i64 {
    match heartbeat_ms {
        Some(hb) => deadline_ms.min(now_ms.saturating_add(hb)),
        None => deadline_ms,
    }
}

/// The lease a task is on, from what is stored: a started task without heartbeats is on its
/// running deadline, whatever the row last recorded (the store does not rewrite the lease when
/// such a task starts: that would cost an index write per task on the hot path; the sweep
/// catches the row up lazily instead).
pub fn effective_lease_expiry(
    running: bool,
    stored: Option<i64>,
    deadline: Option<i64>,
    heartbeat: bool,
) -> Option<i64> {
    if running && !heartbeat {
        deadline.or(stored)
    } else {
        stored
    }
}

/// How long a task waits after its `attempts`-th failed attempt: `base · 2^(attempts-1)`, plus a
/// jitter of up to [`BACKOFF_JITTER`] of that (`jitter` is a random number in `0..1`), at most
/// [`MAX_BACKOFF_MS`]. A base of 0 turns backoff off.
pub fn retry_backoff_ms(attempts: u32, base_ms: i64, jitter: f64) -> i64 {
    if base_ms <= 0 || attempts == 0 {
        return 0;
    }
    let exp = attempts.saturating_sub(1).min(30);
    let step = base_ms.saturating_mul(1i64 << exp).min(MAX_BACKOFF_MS);
    let extra = (step as f64 * BACKOFF_JITTER * jitter.clamp(0.0, 1.0)) as i64;
    step.saturating_add(extra).min(MAX_BACKOFF_MS)
}

/// Whether a task delivered `deliveries` times may not be delivered again (0 means no limit).
pub fn delivery_limit_reached(deliveries: u32, max_deliveries: u32) -> bool {
    max_deliveries > 0 && deliveries >= max_deliveries
}

/// Where a delivery that ended without a result leaves its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryOutcome {
    /// Failed attempts after this one (unchanged by a release).
    pub attempts: u32,
    /// `Pending` to be delivered again, `Failed` for good.
    pub status: TaskStatus,
    /// Failed for good by the delivery limit alone (the dead letter): its error is
    /// [`DELIVERY_LIMIT_ERROR`].
    pub dead_letter: bool,
}

/// A failed attempt (reported, timed out, lost agent): the retry rule of [`after_failure`], then
/// the delivery limit on what would have been retried.
pub fn after_failed_attempt(
    attempts_before: u32,
    max_retries: u32,
    retryable: bool,
    deliveries: u32,
    max_deliveries: u32,
) -> DeliveryOutcome {
    let f = after_failure(attempts_before, max_retries, retryable);
    let dead_letter =
        f.status == TaskStatus::Pending && delivery_limit_reached(deliveries, max_deliveries);
    DeliveryOutcome {
        attempts: f.attempts,
        status: if dead_letter {
            TaskStatus::Failed
        } else {
            f.status
        },
        dead_letter,
    }
}

/// A delivery released without an attempt (declined, offer or claim lease expired, agent
/// unregistered): back to pending, unless the delivery limit is reached.
pub fn after_release(attempts: u32, deliveries: u32, max_deliveries: u32) -> DeliveryOutcome {
    let dead_letter = delivery_limit_reached(deliveries, max_deliveries);
    DeliveryOutcome {
        attempts,
        status: if dead_letter {
            TaskStatus::Failed
        } else {
            TaskStatus::Pending
        },
        dead_letter,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_without_a_lease_uses_the_current_one() {
        let t = Uuid::new_v4();
        let l = Uuid::new_v4();
        assert_eq!(check_lease(t, Some(l), None), Ok(()));
        assert_eq!(check_lease(t, None, None), Ok(()));
    }

    #[test]
    fn only_the_current_lease_may_report() {
        let t = Uuid::new_v4();
        let (old, new) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(check_lease(t, Some(new), Some(new)), Ok(()));
        assert_eq!(
            check_lease(t, Some(new), Some(old)),
            Err(LeaseLost {
                task: t,
                named: old
            })
        );
        assert_eq!(
            check_lease(t, None, Some(old)),
            Err(LeaseLost {
                task: t,
                named: old
            }),
            "a task with no lease (pending, finished) has no current one"
        );
    }

    #[test]
    fn heartbeats_shorten_the_running_lease_never_lengthen_it() {
        assert_eq!(running_lease_expiry(1_000, 61_000, None), 61_000);
        assert_eq!(running_lease_expiry(1_000, 61_000, Some(2_000)), 3_000);
        assert_eq!(running_lease_expiry(60_000, 61_000, Some(2_000)), 61_000);
    }

    #[test]
    fn a_started_task_without_heartbeats_is_on_its_deadline() {
        // Claimed: the claim's (or offer's) lease.
        assert_eq!(
            effective_lease_expiry(false, Some(5), Some(90), false),
            Some(5)
        );
        // Running without heartbeats: the deadline, whatever was stored at the claim.
        assert_eq!(
            effective_lease_expiry(true, Some(5), Some(90), false),
            Some(90)
        );
        // Running with heartbeats: the heartbeat lease.
        assert_eq!(
            effective_lease_expiry(true, Some(7), Some(90), true),
            Some(7)
        );
        // Finished or pending: none.
        assert_eq!(effective_lease_expiry(false, None, None, false), None);
    }

    #[test]
    fn backoff_doubles_within_its_jitter_and_is_capped() {
        for (attempts, step) in [(1, 1_000), (2, 2_000), (3, 4_000), (4, 8_000)] {
            assert_eq!(retry_backoff_ms(attempts, 1_000, 0.0), step);
            assert_eq!(
                retry_backoff_ms(attempts, 1_000, 1.0),
                step + step / 4,
                "jitter adds at most a quarter"
            );
            let mid = retry_backoff_ms(attempts, 1_000, 0.5);
            assert!(mid >= step && mid <= step + step / 4);
        }
        assert_eq!(retry_backoff_ms(40, 2_000, 1.0), MAX_BACKOFF_MS);
        assert_eq!(retry_backoff_ms(10, 2_000, 0.0), MAX_BACKOFF_MS);
        assert_eq!(
            retry_backoff_ms(3, 0, 0.7),
            0,
            "a base of 0 disables backoff"
        );
        assert_eq!(retry_backoff_ms(0, 1_000, 0.7), 0);
        assert_eq!(retry_backoff_ms(1, 1_000, 7.0), 1_250, "jitter is clamped");
    }

    #[test]
    fn a_release_is_free_until_the_delivery_limit() {
        assert_eq!(
            after_release(2, 9, 10),
            DeliveryOutcome {
                attempts: 2,
                status: TaskStatus::Pending,
                dead_letter: false
            }
        );
        assert_eq!(
            after_release(2, 10, 10),
            DeliveryOutcome {
                attempts: 2,
                status: TaskStatus::Failed,
                dead_letter: true
            }
        );
        assert_eq!(after_release(0, 50, 0).status, TaskStatus::Pending);
    }

    #[test]
    fn a_failed_attempt_follows_the_retry_rule_then_the_delivery_limit() {
        // Retries left, deliveries left: retried.
        assert_eq!(
            after_failed_attempt(0, 3, true, 1, 10),
            DeliveryOutcome {
                attempts: 1,
                status: TaskStatus::Pending,
                dead_letter: false
            }
        );
        // Retries left, deliveries used up: the dead letter.
        assert_eq!(
            after_failed_attempt(0, 3, true, 10, 10),
            DeliveryOutcome {
                attempts: 1,
                status: TaskStatus::Failed,
                dead_letter: true
            }
        );
        // Retries used up: failed for its own reason, whatever the deliveries.
        assert_eq!(
            after_failed_attempt(3, 3, true, 10, 10),
            DeliveryOutcome {
                attempts: 4,
                status: TaskStatus::Failed,
                dead_letter: false
            }
        );
        assert_eq!(
            after_failed_attempt(0, 3, false, 1, 10),
            DeliveryOutcome {
                attempts: 1,
                status: TaskStatus::Failed,
                dead_letter: false
            }
        );
    }

    #[test]
    fn the_delivery_limit() {
        assert!(!delivery_limit_reached(9, 10));
        assert!(delivery_limit_reached(10, 10));
        assert!(delivery_limit_reached(11, 10));
        assert!(!delivery_limit_reached(1_000, 0), "0 turns the limit off");
    }
}
