//! The arguments of the MCP tools: the shared request types (their JSON Schemas are what
//! `tools/list` shows), with the ids REST carries in its paths. Who calls comes from the token,
//! never from the arguments.

use agora_shared::{CompleteTask, EventListQuery, FailTask, ProgressTask, TaskListQuery};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use uuid::Uuid;

use crate::error::ApiError;

/// Reads a tool's arguments into `T`: an argument the tool does not take, or one of the wrong
/// shape, is refused naming it.
pub fn parse<T: DeserializeOwned + JsonSchema + 'static>(
    args: serde_json::Map<String, serde_json::Value>,
) -> Result<T, ApiError> {
    let schema = rmcp::handler::server::tool::schema_for_type::<T>();
    let known = schema.get("properties").and_then(|p| p.as_object());
    if let Some(unknown) = args
        .keys()
        .find(|k| known.is_none_or(|p| !p.contains_key(*k)))
    {
        let mut names: Vec<&str> = known
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default();
        names.sort_unstable();
        let takes = if names.is_empty() {
            "no arguments".to_string()
        } else {
            names.join(", ")
        };
        return Err(ApiError::validation(
            unknown,
            format!("this tool takes no argument '{unknown}' (it takes: {takes})"),
        ));
    }
    crate::json::from_value(serde_json::Value::Object(args))
}

/// No arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// One job.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobArgs {
    /// The job's id (a UUID, as `list_jobs` shows it).
    pub job_id: Uuid,
}

/// A job's tasks.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct JobTasksArgs {
    /// The job's id.
    pub job_id: Uuid,
    #[serde(flatten)]
    pub query: TaskListQuery,
}

/// A job's events.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct JobEventsArgs {
    /// The job's id.
    pub job_id: Uuid,
    #[serde(flatten)]
    pub query: EventListQuery,
}

/// An approval of a job or of its plan.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveArgs {
    /// The job's id.
    pub job_id: Uuid,
    /// Why you approve, for the record (optional, up to 2000 characters).
    #[serde(default)]
    pub comment: Option<String>,
}

/// A rejection of a job or of its plan.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectArgs {
    /// The job's id.
    pub job_id: Uuid,
    /// What is wrong and what would fix it (required, up to 2000 characters). A rejected plan's
    /// next planner reads it.
    pub reason: String,
}

/// The most a `claim_task` call waits: under the 60 s at which common MCP clients give up on a
/// tool call.
pub const MAX_CLAIM_WAIT_SECS: u32 = 50;

/// A claim.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimArgs {
    /// Seconds to wait for a task when none is pending (0 to 50; default 0: answer at once).
    #[serde(default)]
    pub wait_secs: Option<u32>,
    /// Any string of yours (up to 128 characters): calling again with the same one after a lost
    /// answer gives back the same task instead of a second one.
    #[serde(default)]
    pub request_id: Option<String>,
    /// Seconds the task stays yours without a report_progress call (1 to 86400; default 900).
    /// Past that silence it goes back to the queue (a failed attempt), so a session that dies
    /// does not hold it for long. 0: no such limit, the task is yours until its deadline.
    #[serde(default)]
    pub heartbeat_secs: Option<u64>,
}

/// The heartbeat lease of a task claimed over MCP unless the claim asks otherwise: an MCP
/// session ends without a word (a closed laptop), and its task should not wait an hour for its
/// deadline.
pub const DEFAULT_HEARTBEAT_SECS: u64 = 900;

/// Progress on a task.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ProgressArgs {
    /// The task's id.
    pub task_id: Uuid,
    #[serde(flatten)]
    pub body: ProgressTask,
}

/// A task's result.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct CompleteArgs {
    /// The task's id.
    pub task_id: Uuid,
    #[serde(flatten)]
    pub body: CompleteTask,
}

/// A task's failure.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct FailArgs {
    /// The task's id.
    pub task_id: Uuid,
    #[serde(flatten)]
    pub body: FailTask,
}

/// A plan.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitPlanArgs {
    /// The plan task's id (a task of type `plan` that you hold).
    pub task_id: Uuid,
    /// The work tasks, in order: each any JSON value that tells one agent what to do, best an
    /// object `{"goal", "inputs", "acceptance", "result_format"}`; or `{"spec": <that>, "name",
    /// "depends_on": [names or positions], "requires": [capabilities], "key", "timeout_secs",
    /// "max_retries"}` to order, route or serialise it. Agents take ready tasks in parallel. An
    /// empty list finishes the job with no work.
    pub task_specs: Vec<serde_json::Value>,
    /// The lease of the delivery you hold (from `claim_task`), to refuse a late answer.
    #[serde(default)]
    pub lease_id: Option<Uuid>,
}
