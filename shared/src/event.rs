//! Events: one row per thing that happened, with a strictly increasing global id. The table is
//! the source of truth; SSE and WebSocket push them after they are committed.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::lifecycle::JobStatus;
use chrono::{DateTime, Utc};

/// What happened. Job status changes are `job.<status>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EventKind {
    #[serde(rename = "job.committed")]
    JobCommitted,
    #[serde(rename = "job.approving")]
    JobApproving,
    #[serde(rename = "job.accepted")]
    JobAccepted,
    #[serde(rename = "job.planning")]
    JobPlanning,
    #[serde(rename = "job.ready")]
    JobReady,
    #[serde(rename = "job.executing")]
    JobExecuting,
    #[serde(rename = "job.completed")]
    JobCompleted,
    #[serde(rename = "job.failed")]
    JobFailed,
    #[serde(rename = "approval.added")]
    ApprovalAdded,
    /// Tasks were created (the plan task, or the work tasks of a plan: `data.count`).
    #[serde(rename = "tasks.created")]
    TasksCreated,
    #[serde(rename = "task.claimed")]
    TaskClaimed,
    #[serde(rename = "task.started")]
    TaskStarted,
    #[serde(rename = "task.progress")]
    TaskProgress,
    #[serde(rename = "task.completed")]
    TaskCompleted,
    /// A failed attempt; `data.status` says whether it will be retried (`pending`) or not.
    #[serde(rename = "task.failed")]
    TaskFailed,
    /// Back to pending with no attempt counted (offer declined or expired).
    #[serde(rename = "task.released")]
    TaskReleased,
    #[serde(rename = "agent.registered")]
    AgentRegistered,
    #[serde(rename = "agent.online")]
    AgentOnline,
    #[serde(rename = "agent.offline")]
    AgentOffline,
    #[serde(rename = "agent.unregistered")]
    AgentUnregistered,
}

impl EventKind {
    pub const ALL: [EventKind; 20] = [
        EventKind::JobCommitted,
        EventKind::JobApproving,
        EventKind::JobAccepted,
        EventKind::JobPlanning,
        EventKind::JobReady,
        EventKind::JobExecuting,
        EventKind::JobCompleted,
        EventKind::JobFailed,
        EventKind::ApprovalAdded,
        EventKind::TasksCreated,
        EventKind::TaskClaimed,
        EventKind::TaskStarted,
        EventKind::TaskProgress,
        EventKind::TaskCompleted,
        EventKind::TaskFailed,
        EventKind::TaskReleased,
        EventKind::AgentRegistered,
        EventKind::AgentOnline,
        EventKind::AgentOffline,
        EventKind::AgentUnregistered,
    ];

    /// The event a job entering `status` writes.
    pub fn for_job_status(status: JobStatus) -> EventKind {
        match status {
            JobStatus::Committed => EventKind::JobCommitted,
            JobStatus::Approving => EventKind::JobApproving,
            JobStatus::Accepted => EventKind::JobAccepted,
            JobStatus::Planning => EventKind::JobPlanning,
            JobStatus::Ready => EventKind::JobReady,
            JobStatus::Executing => EventKind::JobExecuting,
            JobStatus::Completed => EventKind::JobCompleted,
            JobStatus::Failed => EventKind::JobFailed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::JobCommitted => "job.committed",
            EventKind::JobApproving => "job.approving",
            EventKind::JobAccepted => "job.accepted",
            EventKind::JobPlanning => "job.planning",
            EventKind::JobReady => "job.ready",
            EventKind::JobExecuting => "job.executing",
            EventKind::JobCompleted => "job.completed",
            EventKind::JobFailed => "job.failed",
            EventKind::ApprovalAdded => "approval.added",
            EventKind::TasksCreated => "tasks.created",
            EventKind::TaskClaimed => "task.claimed",
            EventKind::TaskStarted => "task.started",
            EventKind::TaskProgress => "task.progress",
            EventKind::TaskCompleted => "task.completed",
            EventKind::TaskFailed => "task.failed",
            EventKind::TaskReleased => "task.released",
            EventKind::AgentRegistered => "agent.registered",
            EventKind::AgentOnline => "agent.online",
            EventKind::AgentOffline => "agent.offline",
            EventKind::AgentUnregistered => "agent.unregistered",
        }
    }
}

impl std::str::FromStr for EventKind {
    type Err = crate::UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| crate::UnknownStatus(s.to_string()))
    }
}

/// One thing that happened.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    /// Strictly increasing across the whole server; the SSE message id.
    pub id: i64,
    pub job_id: Option<Uuid>,
    pub task_id: Option<Uuid>,
    pub agent_id: Option<Uuid>,
    pub kind: EventKind,
    pub data: serde_json::Value,
    pub at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_job_kinds_map_to_states() {
        for k in EventKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
            assert_eq!(k.as_str().parse::<EventKind>(), Ok(k));
        }
        // Each job status has its own event kind.
        let kinds: std::collections::HashSet<EventKind> = JobStatus::ALL
            .into_iter()
            .map(EventKind::for_job_status)
            .collect();
        assert_eq!(kinds.len(), JobStatus::ALL.len());
    }
}
