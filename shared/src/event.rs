//! Events: one row per thing that happened, with a strictly increasing global id. The table is
//! the source of truth; SSE and WebSocket push them after they are committed.
//!
//! Every kind of event and the shape of its `data` are listed once, in the table below
//! (`event_kinds!`): the kind's name on the wire, and the struct its `data` holds. Writers build
//! an [`EventData`]; readers `match` on it. Adding a kind is one line there and one struct here.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::lifecycle::JobStatus;
use crate::task_rules::{TaskStatus, TaskType};
use chrono::{DateTime, Utc};

/// Defines [`EventKind`] (the names) and [`EventData`] (the names with their payloads) from one
/// table, so that the two can never disagree. (`$name` is a `tt`, not a `literal`: utoipa reads
/// `rename` only from a bare string token, and a `literal` fragment arrives wrapped.)
macro_rules! event_kinds {
    ($( $(#[$doc:meta])* $kind:ident = $name:tt => $payload:ty, )*) => {
        /// What happened. Job status changes are `job.<status>`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum EventKind {
            $( $(#[$doc])* #[serde(rename = $name)] $kind, )*
        }

        impl EventKind {
            pub const ALL: &'static [EventKind] = &[ $(EventKind::$kind,)* ];

            pub fn as_str(self) -> &'static str {
                match self { $( EventKind::$kind => $name, )* }
            }
        }

        /// An event's kind with its `data`: on the wire `"kind": "<name>", "data": {…}`.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(tag = "kind", content = "data")]
        pub enum EventData {
            $( $(#[$doc])* #[serde(rename = $name)] $kind($payload), )*
        }

        impl EventData {
            pub fn kind(&self) -> EventKind {
                match self { $( EventData::$kind(_) => EventKind::$kind, )* }
            }

            /// The payload of a stored event: its kind and its `data` as JSON text.
            pub fn from_parts(kind: EventKind, data: &str) -> Result<EventData, serde_json::Error> {
                Ok(match kind { $( EventKind::$kind => EventData::$kind(serde_json::from_str(data)?), )* })
            }

            /// The `data` part alone, as JSON text (what the events table stores).
            pub fn data_json(&self) -> String {
                let text = match self { $( EventData::$kind(d) => serde_json::to_string(d), )* };
                // Plain structs of strings, numbers and ids: serialising them cannot fail.
                text.unwrap_or_else(|_| "{}".to_string())
            }
        }
    };
}

event_kinds! {
    JobCommitted = "job.committed" => JobChanged,
    JobApproving = "job.approving" => JobChanged,
    JobAccepted = "job.accepted" => JobChanged,
    JobPlanning = "job.planning" => JobChanged,
    JobReady = "job.ready" => JobChanged,
    JobExecuting = "job.executing" => JobChanged,
    JobCompleted = "job.completed" => JobChanged,
    JobFailed = "job.failed" => JobChanged,
    ApprovalAdded = "approval.added" => ApprovalAdded,
    /// An approver rejected the job (it fails in the same step).
    ApprovalRejected = "approval.rejected" => ApprovalRejected,
    /// A plan landed and waits for its reviewers (`plan_approvals_required > 0`).
    PlanProposed = "plan.proposed" => PlanProposed,
    /// A reviewer approved the plan; at the quorum its work tasks are created.
    PlanApproved = "plan.approved" => PlanApproved,
    /// A reviewer rejected the plan: a new plan task, or the job fails past `MAX_REPLANS`.
    PlanRejected = "plan.rejected" => PlanRejected,
    /// Tasks were created (the plan task, or the work tasks of a plan).
    TasksCreated = "tasks.created" => TasksCreated,
    TaskClaimed = "task.claimed" => TaskClaimed,
    TaskStarted = "task.started" => TaskStarted,
    TaskProgress = "task.progress" => TaskProgressed,
    TaskCompleted = "task.completed" => TaskCompleted,
    /// A failed attempt; `data.status` says whether it will be retried (`pending`) or not.
    TaskFailed = "task.failed" => TaskFailed,
    /// Back to pending with no attempt counted (offer declined or expired, agent gone).
    TaskReleased = "task.released" => TaskReleased,
    AgentRegistered = "agent.registered" => AgentRegistered,
    AgentOnline = "agent.online" => AgentNamed,
    AgentOffline = "agent.offline" => AgentOffline,
    AgentUnregistered = "agent.unregistered" => AgentNamed,
    /// An operator set the agent's roles.
    AgentRolesChanged = "agent.roles_changed" => AgentRolesChanged,
}

impl EventKind {
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
}

impl std::str::FromStr for EventKind {
    type Err = crate::UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| crate::UnknownStatus(s.to_string()))
    }
}

impl EventData {
    /// The event of a job entering `change.status`.
    pub fn job(change: JobChanged) -> EventData {
        match change.status {
            JobStatus::Committed => EventData::JobCommitted(change),
            JobStatus::Approving => EventData::JobApproving(change),
            JobStatus::Accepted => EventData::JobAccepted(change),
            JobStatus::Planning => EventData::JobPlanning(change),
            JobStatus::Ready => EventData::JobReady(change),
            JobStatus::Executing => EventData::JobExecuting(change),
            JobStatus::Completed => EventData::JobCompleted(change),
            JobStatus::Failed => EventData::JobFailed(change),
        }
    }

    /// The status change of a `job.*` event.
    pub fn job_change(&self) -> Option<&JobChanged> {
        match self {
            EventData::JobCommitted(c)
            | EventData::JobApproving(c)
            | EventData::JobAccepted(c)
            | EventData::JobPlanning(c)
            | EventData::JobReady(c)
            | EventData::JobExecuting(c)
            | EventData::JobCompleted(c)
            | EventData::JobFailed(c) => Some(c),
            _ => None,
        }
    }

    /// A task that reached its end: completed, or failed with no retry left.
    pub fn ends_task(&self) -> bool {
        match self {
            EventData::TaskCompleted(_) => true,
            EventData::TaskFailed(f) => f.status == TaskStatus::Failed,
            _ => false,
        }
    }

    /// A task taken from the agent that held it (failed, cancelled or released): the delivery
    /// it held, and why.
    pub fn taken_back(&self) -> Option<(Option<Uuid>, &str)> {
        match self {
            EventData::TaskFailed(f) => Some((f.lease_id, f.error.as_str())),
            EventData::TaskReleased(r) => Some((r.lease_id, r.reason.as_str())),
            _ => None,
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `job.<status>`: a job changed status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobChanged {
    /// The status it left; `null` for a new job.
    pub from: Option<JobStatus>,
    pub status: JobStatus,
    pub title: String,
    /// Why it failed (`job.failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `approval.added`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApprovalAdded {
    /// The agent's name, or the person's.
    pub agent_name: String,
    pub approvals: u32,
    pub approvals_required: u32,
    /// A person voting through an operator.
    #[serde(default, skip_serializing_if = "is_false")]
    pub person: bool,
}

/// `approval.rejected`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApprovalRejected {
    pub agent_name: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub person: bool,
}

/// `plan.proposed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlanProposed {
    /// 1 for the first plan.
    pub round: u32,
    pub work_tasks: u32,
    pub plan_approvals_required: u32,
    /// The planner's name.
    pub planner: Option<String>,
}

/// `plan.approved`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlanApproved {
    pub agent_name: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub person: bool,
    pub round: u32,
    pub plan_approvals: u32,
    pub plan_approvals_required: u32,
}

/// `plan.rejected`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlanRejected {
    pub agent_name: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub person: bool,
    pub round: u32,
    pub reason: String,
    /// A new plan task was created; `false`: this was the last plan allowed and the job failed.
    pub replan: bool,
}

/// `tasks.created`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TasksCreated {
    pub count: u32,
    #[serde(rename = "type")]
    pub task_type: TaskType,
}

/// `task.claimed`: claimed over REST or offered over a WebSocket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskClaimed {
    pub index: u32,
    #[serde(rename = "type")]
    pub task_type: TaskType,
    pub status: TaskStatus,
    pub attempts: u32,
    #[serde(default)]
    pub deliveries: u32,
    #[serde(default)]
    pub deadline: Option<DateTime<Utc>>,
}

/// `task.started`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskStarted {
    pub index: u32,
    #[serde(rename = "type")]
    pub task_type: TaskType,
    pub status: TaskStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_secs: Option<u64>,
}

/// `task.progress`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskProgressed {
    pub index: u32,
    #[serde(rename = "type")]
    pub task_type: TaskType,
    pub status: TaskStatus,
    pub progress: u32,
    pub message: Option<String>,
}

/// `task.completed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskCompleted {
    pub index: u32,
    #[serde(rename = "type")]
    pub task_type: TaskType,
    pub status: TaskStatus,
}

/// `task.failed`: an attempt failed (`status` `pending` with `retry`), or the task failed for
/// good (`failed`): out of retries, at the delivery limit (`dead_letter`), or its job ended
/// (`cancelled`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskFailed {
    pub index: u32,
    /// Absent in `cancelled` events written before 2026-11-28.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<TaskType>,
    pub status: TaskStatus,
    #[serde(default)]
    pub attempts: u32,
    pub error: String,
    /// It will be offered again (after `available_at`).
    #[serde(default)]
    pub retry: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_at: Option<DateTime<Utc>>,
    /// Failed because its job was cancelled or failed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub cancelled: bool,
    /// Failed at the delivery limit; `deliveries` and `last_error` say more.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dead_letter: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The delivery that lost the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<Uuid>,
}

/// `task.released`: back to pending, no attempt counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskReleased {
    pub index: u32,
    #[serde(rename = "type")]
    pub task_type: TaskType,
    pub status: TaskStatus,
    pub attempts: u32,
    pub reason: String,
    /// The delivery that lost the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<Uuid>,
}

/// `agent.registered`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentRegistered {
    pub name: String,
    pub capabilities: Vec<String>,
}

/// `agent.online` and `agent.unregistered`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentNamed {
    pub name: String,
}

/// `agent.roles_changed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentRolesChanged {
    pub name: String,
    pub roles: Vec<crate::review::Role>,
}

/// `agent.offline`: not heard from since `last_seen_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentOffline {
    pub name: String,
    pub last_seen_at: DateTime<Utc>,
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
    /// `kind` and `data`.
    #[serde(flatten)]
    pub payload: EventData,
    #[serde(with = "crate::wire_time")]
    pub at: DateTime<Utc>,
}

impl Event {
    pub fn kind(&self) -> EventKind {
        self.payload.kind()
    }

    /// The name of the event's agent, where the event carries it (`agent.registered`,
    /// `agent.online`, `agent.unregistered`): shown without asking for it.
    pub fn agent_name(&self) -> Option<&str> {
        match &self.payload {
            EventData::AgentRegistered(a) => Some(&a.name),
            EventData::AgentOnline(a) | EventData::AgentUnregistered(a) => Some(&a.name),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn released() -> EventData {
        EventData::TaskReleased(TaskReleased {
            index: 2,
            task_type: TaskType::Work,
            status: TaskStatus::Pending,
            attempts: 0,
            reason: "offer declined".into(),
            lease_id: None,
        })
    }

    #[test]
    fn agent_events_carry_their_agents_name() {
        let event = |payload| Event {
            id: 1,
            job_id: None,
            task_id: None,
            agent_id: Some(Uuid::nil()),
            payload,
            at: Utc::now(),
        };
        let registered = event(EventData::AgentRegistered(AgentRegistered {
            name: "ada".into(),
            capabilities: vec![],
        }));
        assert_eq!(registered.agent_name(), Some("ada"));
        let online = event(EventData::AgentOnline(AgentNamed { name: "bo".into() }));
        assert_eq!(online.agent_name(), Some("bo"));
        assert_eq!(event(released()).agent_name(), None);
    }

    #[test]
    fn kinds_round_trip_and_job_kinds_map_to_states() {
        for &k in EventKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
            assert_eq!(k.as_str().parse::<EventKind>(), Ok(k));
        }
        // Each job status has its own event kind, and the job's payload lands in it.
        let kinds: std::collections::HashSet<EventKind> = JobStatus::ALL
            .into_iter()
            .map(EventKind::for_job_status)
            .collect();
        assert_eq!(kinds.len(), JobStatus::ALL.len());
        for status in JobStatus::ALL {
            let data = EventData::job(JobChanged {
                from: None,
                status,
                title: "t".into(),
                error: None,
            });
            assert_eq!(data.kind(), EventKind::for_job_status(status));
            assert_eq!(data.job_change().map(|c| c.status), Some(status));
        }
    }

    #[test]
    fn the_wire_shape_is_kind_and_data() {
        let e = Event {
            id: 7,
            job_id: None,
            task_id: None,
            agent_id: None,
            payload: released(),
            at: "2026-11-28T00:00:00Z".parse().unwrap(),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["kind"], "task.released");
        assert_eq!(v["data"]["reason"], "offer declined");
        assert_eq!(v["data"]["type"], "work");
        assert!(v["data"].get("lease_id").is_none(), "{v}");
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), e);
        // The stored form: the kind in its column, the data as text.
        let stored = EventData::from_parts(EventKind::TaskReleased, &e.payload.data_json());
        assert_eq!(stored.unwrap(), e.payload);
        // Data of another kind's shape is refused, naming the field.
        let wrong = EventData::from_parts(EventKind::AgentOffline, &e.payload.data_json());
        assert!(wrong.unwrap_err().to_string().contains("name"));
    }

    #[test]
    fn older_cancel_events_still_read() {
        // Written before events were typed: no type, attempts or retry.
        let old = r#"{"index":3,"status":"failed","error":"job cancelled","cancelled":true,"lease_id":null}"#;
        let data = EventData::from_parts(EventKind::TaskFailed, old).unwrap();
        assert!(data.ends_task());
        assert_eq!(data.taken_back(), Some((None, "job cancelled")));
    }

    #[test]
    fn which_events_end_a_task() {
        let failed = |status| {
            EventData::TaskFailed(TaskFailed {
                index: 1,
                task_type: Some(TaskType::Work),
                status,
                attempts: 1,
                error: "boom".into(),
                retry: status == TaskStatus::Pending,
                available_at: None,
                cancelled: false,
                dead_letter: false,
                deliveries: None,
                last_error: None,
                lease_id: None,
            })
        };
        assert!(failed(TaskStatus::Failed).ends_task());
        assert!(!failed(TaskStatus::Pending).ends_task());
        assert!(!released().ends_task());
        assert_eq!(released().taken_back(), Some((None, "offer declined")));
    }
}
