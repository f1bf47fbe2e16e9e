//! The job lifecycle: `committed → approving → accepted → planning → ready → executing →
//! completed | failed`, with one loop back (`ready → accepted` when reviewers reject a plan), as
//! pure functions so every (state, event) pair can be unit-tested.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The 8 states of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Committed,
    Approving,
    Accepted,
    Planning,
    Ready,
    Executing,
    Completed,
    Failed,
}

/// What can happen to a job. The store decides which event occurred from the database and asks
/// [`JobStatus::transition`] whether it is allowed and where it leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEvent {
    /// The first approval arrived.
    FirstApproval,
    /// Approvals reached the job's `approvals_required`.
    QuorumReached,
    /// The plan task (index 0) was claimed for the first time.
    PlanClaimed,
    /// The plan task completed and produced this many work tasks.
    PlanCompleted { work_tasks: usize },
    /// The first work task was claimed.
    WorkClaimed,
    /// Every task of the job is terminal; `any_failed` if one failed for good.
    WorkSettled { any_failed: bool },
    /// The plan task failed for good.
    PlanFailed,
    /// An operator cancelled the job.
    Cancelled,
    /// An eligible approver rejected the job.
    Rejected,
    /// The job's approval window ran out before the quorum.
    ApprovalExpired,
    /// A reviewer rejected the plan: a new plan task (`replan`) or, past `MAX_REPLANS`, the end.
    PlanRejected { replan: bool },
}

/// A transition the lifecycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a job in state '{from}' cannot take event {event:?}")]
pub struct InvalidTransition {
    pub from: JobStatus,
    pub event: JobEvent,
}

impl JobStatus {
    pub const ALL: [JobStatus; 8] = [
        JobStatus::Committed,
        JobStatus::Approving,
        JobStatus::Accepted,
        JobStatus::Planning,
        JobStatus::Ready,
        JobStatus::Executing,
        JobStatus::Completed,
        JobStatus::Failed,
    ];

    /// The state `event` leads to from `self`, or why it cannot happen.
    pub fn transition(self, event: JobEvent) -> Result<JobStatus, InvalidTransition> {
        use JobEvent as E;
        use JobStatus as S;
        let next = match (self, event) {
            (S::Committed, E::FirstApproval) => S::Approving,
            (S::Approving, E::QuorumReached) => S::Accepted,
            (S::Accepted, E::PlanClaimed) => S::Planning,
            (S::Planning, E::PlanCompleted { work_tasks: 0 }) => S::Completed,
            (S::Planning, E::PlanCompleted { .. }) => S::Ready,
            (S::Ready, E::WorkClaimed) => S::Executing,
            (S::Executing, E::WorkSettled { any_failed: false }) => S::Completed,
            (S::Executing, E::WorkSettled { any_failed: true }) => S::Failed,
            (S::Accepted | S::Planning, E::PlanFailed) => S::Failed,
            (S::Committed | S::Approving, E::Rejected | E::ApprovalExpired) => S::Failed,
            (S::Ready, E::PlanRejected { replan: true }) => S::Accepted,
            (S::Ready, E::PlanRejected { replan: false }) => S::Failed,
            (from, E::Cancelled) if !from.is_terminal() => S::Failed,
            (from, event) => return Err(InvalidTransition { from, event }),
        };
        Ok(next)
    }

    /// `completed` and `failed` never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed)
    }

    /// Jobs with tasks to claim and run: past the approval gate, not finished.
    pub const CLAIMABLE: [JobStatus; 4] = [
        JobStatus::Accepted,
        JobStatus::Planning,
        JobStatus::Ready,
        JobStatus::Executing,
    ];

    /// Jobs whose pending tasks may be claimed.
    pub fn is_claimable(self) -> bool {
        JobStatus::CLAIMABLE.contains(&self)
    }

    /// Jobs waiting at the approval gate.
    pub const APPROVABLE: [JobStatus; 2] = [JobStatus::Committed, JobStatus::Approving];

    /// Jobs that still take approvals (and rejections).
    pub fn accepts_approvals(self) -> bool {
        JobStatus::APPROVABLE.contains(&self)
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            JobStatus::Committed => "committed",
            JobStatus::Approving => "approving",
            JobStatus::Accepted => "accepted",
            JobStatus::Planning => "planning",
            JobStatus::Ready => "ready",
            JobStatus::Executing => "executing",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown status name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status '{0}'")]
pub struct UnknownStatus(pub String);

impl FromStr for JobStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

/// The states a job passes through when an approval brings it to `approvals` of `required`:
/// the first approval moves `committed` to `approving`, and reaching the quorum moves on to
/// `accepted` in the same step. Empty when the approval changes nothing.
pub fn approval_path(
    status: JobStatus,
    approvals: u32,
    required: u32,
) -> Result<Vec<JobStatus>, InvalidTransition> {
    let mut path = Vec::new();
    let mut current = status;
    if current == JobStatus::Committed {
        current = current.transition(JobEvent::FirstApproval)?;
        path.push(current);
    }
    if current != JobStatus::Approving {
        return Err(InvalidTransition {
            from: status,
            event: JobEvent::FirstApproval,
        });
    }
    if approvals >= required {
        path.push(current.transition(JobEvent::QuorumReached)?);
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobEvent as E;
    use JobStatus as S;

    fn events() -> Vec<JobEvent> {
        vec![
            E::FirstApproval,
            E::QuorumReached,
            E::PlanClaimed,
            E::PlanCompleted { work_tasks: 0 },
            E::PlanCompleted { work_tasks: 3 },
            E::WorkClaimed,
            E::WorkSettled { any_failed: false },
            E::WorkSettled { any_failed: true },
            E::PlanFailed,
            E::Cancelled,
            E::Rejected,
            E::ApprovalExpired,
            E::PlanRejected { replan: true },
            E::PlanRejected { replan: false },
        ]
    }

    /// The full table: every legal pair and where it leads. Everything else is illegal.
    fn expected(from: JobStatus, event: JobEvent) -> Option<JobStatus> {
        Some(match (from, event) {
            (S::Committed, E::FirstApproval) => S::Approving,
            (S::Approving, E::QuorumReached) => S::Accepted,
            (S::Accepted, E::PlanClaimed) => S::Planning,
            (S::Planning, E::PlanCompleted { work_tasks: 0 }) => S::Completed,
            (S::Planning, E::PlanCompleted { work_tasks: 3 }) => S::Ready,
            (S::Ready, E::WorkClaimed) => S::Executing,
            (S::Executing, E::WorkSettled { any_failed: false }) => S::Completed,
            (S::Executing, E::WorkSettled { any_failed: true }) => S::Failed,
            (S::Accepted, E::PlanFailed) | (S::Planning, E::PlanFailed) => S::Failed,
            (S::Committed, E::Rejected)
            | (S::Approving, E::Rejected)
            | (S::Committed, E::ApprovalExpired)
            | (S::Approving, E::ApprovalExpired) => S::Failed,
            (S::Ready, E::PlanRejected { replan: true }) => S::Accepted,
            (S::Ready, E::PlanRejected { replan: false }) => S::Failed,
            (S::Committed, E::Cancelled)
            | (S::Approving, E::Cancelled)
            | (S::Accepted, E::Cancelled)
            | (S::Planning, E::Cancelled)
            | (S::Ready, E::Cancelled)
            | (S::Executing, E::Cancelled) => S::Failed,
            _ => return None,
        })
    }

    #[test]
    fn every_state_event_pair_matches_the_table() {
        let mut legal = 0;
        for from in JobStatus::ALL {
            for event in events() {
                let got = from.transition(event);
                match expected(from, event) {
                    Some(to) => {
                        legal += 1;
                        assert_eq!(got, Ok(to), "{from} + {event:?}");
                    }
                    None => assert_eq!(
                        got,
                        Err(InvalidTransition { from, event }),
                        "{from} + {event:?}"
                    ),
                }
            }
        }
        assert_eq!(legal, 22);
    }

    #[test]
    fn terminal_states_never_change() {
        for from in [S::Completed, S::Failed] {
            for event in events() {
                assert!(from.transition(event).is_err());
            }
        }
    }

    #[test]
    fn the_happy_path_visits_all_states_in_order() {
        let path = [
            E::FirstApproval,
            E::QuorumReached,
            E::PlanClaimed,
            E::PlanCompleted { work_tasks: 2 },
            E::WorkClaimed,
            E::WorkSettled { any_failed: false },
        ];
        let mut s = S::Committed;
        let mut seen = vec![s];
        for e in path {
            s = s.transition(e).unwrap();
            seen.push(s);
        }
        assert_eq!(seen, JobStatus::ALL[..7].to_vec());
    }

    #[test]
    fn a_rejected_plan_loops_back_to_planning() {
        let path = [
            E::FirstApproval,
            E::QuorumReached,
            E::PlanClaimed,
            E::PlanCompleted { work_tasks: 2 },
            E::PlanRejected { replan: true },
            E::PlanClaimed,
            E::PlanCompleted { work_tasks: 3 },
            E::WorkClaimed,
            E::WorkSettled { any_failed: false },
        ];
        let mut s = S::Committed;
        for e in path {
            s = s.transition(e).unwrap();
        }
        assert_eq!(s, S::Completed);
    }

    #[test]
    fn approval_path_moves_through_approving() {
        assert_eq!(approval_path(S::Committed, 1, 5), Ok(vec![S::Approving]));
        assert_eq!(approval_path(S::Approving, 4, 5), Ok(vec![]));
        assert_eq!(approval_path(S::Approving, 5, 5), Ok(vec![S::Accepted]));
        assert_eq!(
            approval_path(S::Committed, 1, 1),
            Ok(vec![S::Approving, S::Accepted])
        );
        for s in [
            S::Accepted,
            S::Planning,
            S::Ready,
            S::Executing,
            S::Completed,
            S::Failed,
        ] {
            assert!(approval_path(s, 6, 5).is_err(), "{s}");
        }
    }

    #[test]
    fn status_names_round_trip() {
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>(), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!("done".parse::<JobStatus>().is_err());
    }

    #[test]
    fn claimable_and_approvable_sets() {
        let claimable: Vec<_> = JobStatus::ALL
            .into_iter()
            .filter(|s| s.is_claimable())
            .collect();
        assert_eq!(
            claimable,
            vec![S::Accepted, S::Planning, S::Ready, S::Executing]
        );
        // Past the gate and not finished: what the lifecycle leaves between them.
        let between: Vec<_> = JobStatus::ALL
            .into_iter()
            .filter(|s| !s.accepts_approvals() && !s.is_terminal())
            .collect();
        assert_eq!(between, JobStatus::CLAIMABLE);
        let approvable: Vec<_> = JobStatus::ALL
            .into_iter()
            .filter(|s| s.accepts_approvals())
            .collect();
        assert_eq!(approvable, vec![S::Committed, S::Approving]);
    }
}
