//! Task states and the rules over them: which action is legal in which state, and what a failure
//! leads to (`attempts += 1`; back to `pending` while `attempts <= max_retries`).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::lifecycle::UnknownStatus;

/// `pending → claimed → running → completed | failed`, and back to `pending` on retry or release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Pending,
    Claimed,
    Running,
    Completed,
    Failed,
}

/// Task 0 plans the job; the others do the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TaskType {
    Plan,
    Work,
}

/// What an agent or the scheduler does to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskAction {
    /// An agent takes a pending task.
    Claim,
    /// The assigned agent starts work.
    Start,
    /// The assigned agent reports progress.
    Progress,
    /// The assigned agent reports success.
    Complete,
    /// The assigned agent, the deadline or a stale-agent sweep reports a failed attempt.
    Fail,
    /// An offer was declined or expired: back to pending with no attempt counted.
    Release,
}

/// An action the task's state does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action:?} a task that is '{status}'")]
pub struct InvalidTaskAction {
    pub status: TaskStatus,
    pub action: TaskAction,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 5] = [
        TaskStatus::Pending,
        TaskStatus::Claimed,
        TaskStatus::Running,
        TaskStatus::Completed,
        TaskStatus::Failed,
    ];

    /// The state `action` leads to, or why it is illegal. `Fail` answers `Failed` here; whether
    /// the task goes back to `pending` is [`after_failure`]'s call.
    pub fn apply(self, action: TaskAction) -> Result<TaskStatus, InvalidTaskAction> {
        use TaskAction as A;
        use TaskStatus as S;
        let next = match (self, action) {
            (S::Pending, A::Claim) => S::Claimed,
            (S::Claimed, A::Start) => S::Running,
            // Progress from `claimed` implies the agent started.
            (S::Claimed | S::Running, A::Progress) => S::Running,
            // An agent may complete or fail without reporting a start first.
            (S::Claimed | S::Running, A::Complete) => S::Completed,
            (S::Claimed | S::Running, A::Fail) => S::Failed,
            (S::Claimed, A::Release) => S::Pending,
            (status, action) => return Err(InvalidTaskAction { status, action }),
        };
        Ok(next)
    }

    /// Held by an agent: the states an agent may complete or fail from.
    pub const ACTIVE: [TaskStatus; 2] = [TaskStatus::Claimed, TaskStatus::Running];
    /// Not finished: waiting for an agent, or held by one.
    pub const OPEN: [TaskStatus; 3] = [
        TaskStatus::Pending,
        TaskStatus::Claimed,
        TaskStatus::Running,
    ];
    /// Finished for good: no action leads anywhere from them.
    pub const TERMINAL: [TaskStatus; 2] = [TaskStatus::Completed, TaskStatus::Failed];

    pub fn is_terminal(self) -> bool {
        TaskStatus::TERMINAL.contains(&self)
    }

    /// Held by an agent: claimed or running.
    pub fn is_active(self) -> bool {
        TaskStatus::ACTIVE.contains(&self)
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Claimed => "claimed",
            TaskStatus::Running => "running",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
        }
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

impl TaskType {
    pub const fn as_str(self) -> &'static str {
        match self {
            TaskType::Plan => "plan",
            TaskType::Work => "work",
        }
    }
}

impl FromStr for TaskType {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "plan" => Ok(TaskType::Plan),
            "work" => Ok(TaskType::Work),
            other => Err(UnknownStatus(other.to_string())),
        }
    }
}

/// Where a failed attempt leaves a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureOutcome {
    /// Attempts after this failure.
    pub attempts: u32,
    /// `Pending` to retry, `Failed` for good.
    pub status: TaskStatus,
}

/// The retry rule: the attempt counts; the task goes back to `pending` while
/// `attempts <= max_retries` and `retryable`, else it fails for good.
pub fn after_failure(attempts_before: u32, max_retries: u32, retryable: bool) -> FailureOutcome {
    let attempts = attempts_before.saturating_add(1);
    let status = if retryable && attempts <= max_retries {
        TaskStatus::Pending
    } else {
        TaskStatus::Failed
    };
    FailureOutcome { attempts, status }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskAction as A;
    use TaskStatus as S;

    const ACTIONS: [TaskAction; 6] = [
        A::Claim,
        A::Start,
        A::Progress,
        A::Complete,
        A::Fail,
        A::Release,
    ];

    fn expected(from: TaskStatus, action: TaskAction) -> Option<TaskStatus> {
        Some(match (from, action) {
            (S::Pending, A::Claim) => S::Claimed,
            (S::Claimed, A::Start) => S::Running,
            (S::Claimed, A::Progress) | (S::Running, A::Progress) => S::Running,
            (S::Claimed, A::Complete) | (S::Running, A::Complete) => S::Completed,
            (S::Claimed, A::Fail) | (S::Running, A::Fail) => S::Failed,
            (S::Claimed, A::Release) => S::Pending,
            _ => return None,
        })
    }

    /// The sets the store's statements use are the state machine's, not a copy of it.
    #[test]
    fn the_status_sets_follow_from_the_transitions() {
        let from_which = |action: TaskAction| -> Vec<TaskStatus> {
            TaskStatus::ALL
                .into_iter()
                .filter(|s| s.apply(action).is_ok())
                .collect()
        };
        assert_eq!(from_which(A::Complete), S::ACTIVE);
        assert_eq!(from_which(A::Fail), S::ACTIVE);
        let dead_ends: Vec<TaskStatus> = TaskStatus::ALL
            .into_iter()
            .filter(|s| ACTIONS.iter().all(|a| s.apply(*a).is_err()))
            .collect();
        assert_eq!(dead_ends, S::TERMINAL);
        let open: Vec<TaskStatus> = TaskStatus::ALL
            .into_iter()
            .filter(|s| !s.is_terminal())
            .collect();
        assert_eq!(open, S::OPEN);
    }

    #[test]
    fn every_state_action_pair_matches_the_table() {
        for from in TaskStatus::ALL {
            for action in ACTIONS {
                match expected(from, action) {
                    Some(to) => assert_eq!(from.apply(action), Ok(to), "{from} {action:?}"),
                    None => assert_eq!(
                        from.apply(action),
                        Err(InvalidTaskAction {
                            status: from,
                            action
                        }),
                        "{from} {action:?}"
                    ),
                }
            }
        }
    }

    #[test]
    fn terminal_tasks_take_no_action() {
        for from in [S::Completed, S::Failed] {
            for action in ACTIONS {
                assert!(from.apply(action).is_err());
            }
        }
    }

    #[test]
    fn retries_until_attempts_exceed_max_retries() {
        assert_eq!(
            after_failure(0, 3, true),
            FailureOutcome {
                attempts: 1,
                status: S::Pending
            }
        );
        assert_eq!(
            after_failure(2, 3, true),
            FailureOutcome {
                attempts: 3,
                status: S::Pending
            }
        );
        assert_eq!(
            after_failure(3, 3, true),
            FailureOutcome {
                attempts: 4,
                status: S::Failed
            }
        );
        assert_eq!(
            after_failure(0, 0, true),
            FailureOutcome {
                attempts: 1,
                status: S::Failed
            }
        );
    }

    #[test]
    fn non_retryable_fails_at_once() {
        assert_eq!(
            after_failure(0, 3, false),
            FailureOutcome {
                attempts: 1,
                status: S::Failed
            }
        );
    }

    #[test]
    fn names_round_trip() {
        for s in TaskStatus::ALL {
            assert_eq!(s.as_str().parse::<TaskStatus>(), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for t in [TaskType::Plan, TaskType::Work] {
            assert_eq!(t.as_str().parse::<TaskType>(), Ok(t));
        }
        assert!("done".parse::<TaskStatus>().is_err());
    }
}
