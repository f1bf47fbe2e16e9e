//! Row types private to the store and their mapping to the wire types of `agora-shared`.

use agora_shared::{
    Agent, AgentStatus, Approval, Event, EventData, EventKind, Job, JobStatus, JobSummary, Stage,
    Task, TaskStatus, TaskType, Verdict,
};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::error::{Result, StoreError};

/// A page of a list from its rows, each turned into its API type, and the count of all matches.
pub fn page<R, T>(
    rows: Vec<R>,
    into: impl Fn(R) -> Result<T>,
    total: i64,
    limit: u32,
    offset: u64,
) -> Result<agora_shared::Page<T>> {
    Ok(agora_shared::Page {
        items: rows.into_iter().map(into).collect::<Result<_>>()?,
        total: u64::try_from(total).unwrap_or_default(),
        limit,
        offset,
    })
}

pub fn ts(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Internal(anyhow::anyhow!("corrupt {what} in the database: {value:?}"))
}

pub fn uuid(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|_| corrupt("uuid", s))
}

fn opt_uuid(s: Option<String>) -> Result<Option<Uuid>> {
    s.as_deref().map(uuid).transpose()
}

pub fn json(s: &str) -> Result<Value> {
    serde_json::from_str(s).map_err(|_| corrupt("json", s))
}

pub fn parse<T: std::str::FromStr>(what: &str, s: &str) -> Result<T> {
    s.parse().map_err(|_| corrupt(what, s))
}

pub fn u32_of(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

crate::db_row! {
pub struct AgentRow {
    pub id: String,
    pub name: String,
    pub status: String,
    pub capabilities: String,
    pub registered_at: i64,
    pub last_seen_at: i64,
    pub last_approved_at: Option<i64>,
    pub roles: String,
}
}

impl AgentRow {
    pub fn roles(&self) -> Result<Vec<agora_shared::Role>> {
        serde_json::from_str(&self.roles).map_err(|_| corrupt("roles", &self.roles))
    }

    pub fn into_agent(self) -> Result<Agent> {
        let roles = self.roles()?;
        Ok(Agent {
            id: uuid(&self.id)?,
            name: self.name,
            status: parse::<AgentStatus>("agent status", &self.status)?,
            capabilities: serde_json::from_str(&self.capabilities)
                .map_err(|_| corrupt("capabilities", &self.capabilities))?,
            registered_at: ts(self.registered_at),
            last_seen_at: ts(self.last_seen_at),
            last_approved_at: self.last_approved_at.map(ts),
            roles,
        })
    }
}

// `job_spec` is `None` when read with `JOB_STATE_COLUMNS` (the write paths). `has_deps`: 1 when
// a task of the job depends on another.
crate::db_row! {
#[derive(Clone)]
pub struct JobRow {
    pub id: String,
    pub title: String,
    pub job_spec: Option<String>,
    pub status: String,
    pub submitted_by: Option<String>,
    pub approvals_required: i64,
    pub approvals: i64,
    pub priority: i64,
    pub tasks_total: i64,
    pub tasks_completed: i64,
    pub tasks_failed: i64,
    pub tasks_running: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
    pub approval_expires_at: Option<i64>,
    pub plan_approvals_required: i64,
    pub plan_approvals: i64,
    pub plans_rejected: i64,
    pub has_deps: i64,
}
}

impl JobRow {
    pub fn status(&self) -> Result<JobStatus> {
        parse("job status", &self.status)
    }

    /// Whether its plan waits for reviewers ([`agora_shared::plan_under_review`]).
    pub fn plan_under_review(&self) -> Result<bool> {
        Ok(agora_shared::plan_under_review(
            self.status()?,
            u32_of(self.plan_approvals),
            u32_of(self.plan_approvals_required),
        ))
    }

    /// The id, title, status and priority (claim answers and offers).
    pub fn summary(&self) -> Result<JobSummary> {
        Ok(JobSummary {
            id: uuid(&self.id)?,
            title: self.title.clone(),
            status: self.status()?,
            priority: i32::try_from(self.priority).unwrap_or_default(),
        })
    }

    pub fn into_job(self) -> Result<Job> {
        let spec = self.job_spec.as_deref().ok_or_else(|| {
            StoreError::Internal(anyhow::anyhow!(
                "job {} was read without its spec where the whole job is needed",
                self.id
            ))
        })?;
        Ok(Job {
            id: uuid(&self.id)?,
            status: self.status()?,
            job_spec: json(spec)?,
            title: self.title,
            submitted_by: opt_uuid(self.submitted_by)?,
            approvals_required: u32_of(self.approvals_required),
            approvals: u32_of(self.approvals),
            priority: i32::try_from(self.priority).unwrap_or_default(),
            tasks_total: u32_of(self.tasks_total),
            tasks_completed: u32_of(self.tasks_completed),
            tasks_failed: u32_of(self.tasks_failed),
            tasks_running: u32_of(self.tasks_running),
            created_at: ts(self.created_at),
            updated_at: ts(self.updated_at),
            finished_at: self.finished_at.map(ts),
            error: self.error,
            approval_expires_at: self.approval_expires_at.map(ts),
            plan_approvals_required: u32_of(self.plan_approvals_required),
            plan_approvals: u32_of(self.plan_approvals),
            plans_rejected: u32_of(self.plans_rejected),
        })
    }
}

crate::db_row! {
pub struct TaskRow {
    pub id: String,
    pub job_id: String,
    pub idx: i64,
    pub task_type: String,
    pub task_spec: String,
    pub status: String,
    pub attempts: i64,
    pub max_retries: i64,
    pub timeout_secs: i64,
    pub agent_id: Option<String>,
    pub claimed_at: Option<i64>,
    pub started_at: Option<i64>,
    pub deadline: Option<i64>,
    pub progress: i64,
    pub progress_message: Option<String>,
    pub result: Option<String>,
    pub error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    pub lease_id: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub heartbeat_secs: Option<i64>,
    pub deliveries: i64,
    pub available_at: i64,
    pub via: Option<String>,
    pub name: Option<String>,
    pub depends_on: Option<String>,
    pub unmet: i64,
    pub requires: Option<String>,
    pub task_key: Option<String>,
}
}

impl TaskRow {
    /// The current delivery, if an agent holds (or last held) the task.
    pub fn lease(&self) -> Result<Option<Uuid>> {
        opt_uuid(self.lease_id.clone())
    }

    /// The delivery as a socket names it: a task held since before leases existed has no lease,
    /// and the nil lease names it.
    pub fn delivery(&self) -> Result<Uuid> {
        Ok(self.lease()?.unwrap_or_default())
    }

    /// Whether the task is still `agent`'s delivery `lease`: held (claimed or running) by that
    /// agent on that lease. A release or revocation meant for an earlier delivery of the task
    /// finds `false` and does nothing.
    pub fn is_held_on(&self, agent: Uuid, lease: Uuid) -> Result<bool> {
        Ok(self.status()?.is_active()
            && self.agent_id.as_deref() == Some(agent.to_string().as_str())
            && self.delivery()? == lease)
    }

    pub fn index(&self) -> u32 {
        u32_of(self.idx)
    }

    pub fn attempts(&self) -> u32 {
        u32_of(self.attempts)
    }

    pub fn deliveries(&self) -> u32 {
        u32_of(self.deliveries)
    }

    pub fn status(&self) -> Result<TaskStatus> {
        parse("task status", &self.status)
    }

    pub fn task_type(&self) -> Result<TaskType> {
        parse("task type", &self.task_type)
    }

    pub fn into_task(self) -> Result<Task> {
        let (depends_on, requires) = (self.depends_on()?, self.requires()?);
        Ok(Task {
            id: uuid(&self.id)?,
            job_id: uuid(&self.job_id)?,
            index: u32_of(self.idx),
            task_type: self.task_type()?,
            status: self.status()?,
            task_spec: json(&self.task_spec)?,
            attempts: u32_of(self.attempts),
            max_retries: u32_of(self.max_retries),
            timeout_secs: u64::try_from(self.timeout_secs).unwrap_or_default(),
            agent_id: opt_uuid(self.agent_id)?,
            agent_name: None,
            claimed_at: self.claimed_at.map(ts),
            started_at: self.started_at.map(ts),
            deadline: self.deadline.map(ts),
            progress: u32_of(self.progress),
            progress_message: self.progress_message,
            result: self.result.as_deref().map(json).transpose()?,
            error: self.error,
            created_at: ts(self.created_at),
            updated_at: ts(self.updated_at),
            finished_at: self.finished_at.map(ts),
            deliveries: u32_of(self.deliveries),
            lease_expires_at: agora_shared::effective_lease_expiry(
                self.status == TaskStatus::Running.as_str(),
                self.lease_expires_at,
                self.deadline,
                self.heartbeat_secs.is_some(),
            )
            .map(ts),
            heartbeat_secs: self.heartbeat_secs.and_then(|h| u64::try_from(h).ok()),
            available_at: (self.available_at > 0).then(|| ts(self.available_at)),
            depends_on,
            unmet_dependencies: u32_of(self.unmet),
            requires,
            name: self.name,
            key: self.task_key,
            waiting_for: None,
        })
    }

    /// How the task is named in `inputs` and errors: its name (a plan without names gives its
    /// position), or `#index` for a task from before names.
    pub fn label(&self) -> String {
        task_label_at(self.name.as_deref(), self.idx)
    }

    /// The job's task indexes it waits for.
    pub fn depends_on(&self) -> Result<Vec<u32>> {
        stored_list(&self.id, "depends_on", self.depends_on.as_deref())
    }

    /// The capabilities it requires.
    pub fn requires(&self) -> Result<Vec<String>> {
        stored_list(&self.id, "requires", self.requires.as_deref())
    }
}

/// How task `idx` of a job is named in `inputs` and errors: its name, or `#idx` for a task
/// from before names.
pub fn task_label_at(name: Option<&str>, idx: i64) -> String {
    name.map_or_else(|| format!("#{idx}"), str::to_string)
}

/// A task's list column: JSON text, NULL when empty.
fn stored_list<T: serde::de::DeserializeOwned>(
    task: &str,
    column: &str,
    text: Option<&str>,
) -> Result<Vec<T>> {
    text.map_or(Ok(Vec::new()), |t| {
        serde_json::from_str(t)
            .map_err(|e| StoreError::Internal(anyhow::anyhow!("task {task}: stored {column}: {e}")))
    })
}

crate::db_row! {
pub struct VoteRow {
    pub job_id: String,
    pub round: i64,
    pub voter: String,
    pub agent_id: Option<String>,
    pub name: String,
    pub verdict: String,
    pub comment: Option<String>,
    pub created_at: i64,
}
}

impl VoteRow {
    pub fn into_approval(self) -> Result<Approval> {
        let verdict = parse::<Verdict>("verdict", &self.verdict)?;
        let (comment, reason) = match verdict {
            Verdict::Approve => (self.comment, None),
            Verdict::Reject => (None, self.comment),
        };
        let round = u32_of(self.round);
        Ok(Approval {
            job_id: uuid(&self.job_id)?,
            agent_id: opt_uuid(self.agent_id)?,
            person: self.voter.starts_with(agora_shared::PERSON_PREFIX),
            agent_name: self.name,
            voter: self.voter,
            verdict,
            stage: if round == 0 { Stage::Job } else { Stage::Plan },
            plan_round: (round > 0).then_some(round),
            comment,
            reason,
            created_at: ts(self.created_at),
        })
    }
}

crate::db_row! {
pub struct EventRow {
    pub id: i64,
    pub job_id: Option<String>,
    pub task_id: Option<String>,
    pub agent_id: Option<String>,
    pub kind: String,
    pub data: String,
    pub at: i64,
}
}

impl EventRow {
    pub fn into_event(self) -> Result<Event> {
        Ok(Event {
            id: self.id,
            job_id: opt_uuid(self.job_id)?,
            task_id: opt_uuid(self.task_id)?,
            agent_id: opt_uuid(self.agent_id)?,
            payload: EventData::from_parts(
                parse::<EventKind>("event kind", &self.kind)?,
                &self.data,
            )
            .map_err(|e| corrupt("event data", &format!("{e}: {}", self.data)))?,
            at: ts(self.at),
        })
    }
}
