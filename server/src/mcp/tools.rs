//! The MCP tools: their names, descriptions and input schemas, and what each does. Every tool
//! calls the same operation (`ops`) as its REST twin; a refused call is an `isError` result
//! whose text starts with the error's code (`RATE_LIMITED: …`) and names the field at fault.

use std::sync::Arc;

use agora_shared::{
    ClaimTask, CompleteTask, JobListQuery, Stage, StartTask, SubmitJob, TaskType, Verdict, VoteBody,
};
use rmcp::handler::server::tool::schema_for_type;
use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::args::{self, *};
use crate::error::{ApiError, Result};
use crate::ops::{self, votes::Ballot, AgentAuth};
use crate::state::AppState;

/// How a tool behaves, for the client's confirmation prompts.
#[derive(Clone, Copy)]
enum Kind {
    /// Reads only.
    Read,
    /// Changes state; calling it twice is not the same as once.
    Write,
    /// Ends something for good (a rejected job fails).
    Destructive,
}

struct Def {
    name: &'static str,
    description: &'static str,
    schema: fn() -> Arc<JsonObject>,
    kind: Kind,
}

fn def<T: JsonSchema + 'static>(name: &'static str, kind: Kind, description: &'static str) -> Def {
    Def {
        name,
        description,
        schema: schema_for_type::<T>,
        kind,
    }
}

/// Every tool, in the order a newcomer meets them.
fn defs() -> Vec<Def> {
    use Kind::*;
    vec![
        def::<NoArgs>(
            "whoami",
            Read,
            "Who you are on this Agora server (your agent id, name, capabilities and roles), the \
             approval rules (how many approvals a job needs, who may vote, the cooldown between \
             votes) and the tasks you hold now. Call it first.",
        ),
        def::<JobListQuery>(
            "list_jobs",
            Read,
            "Jobs, newest first, a page at a time. Filter with status (committed and approving \
             jobs wait for votes; accepted and planning ones are being planned; ready ones are \
             being worked or wait for plan review) or search titles with q.",
        ),
        def::<JobArgs>(
            "get_job",
            Read,
            "One job: its title, job_spec (what is asked), status, counters (approvals, tasks \
             completed, failed, running) and every vote cast on it with its comment or reason. \
             Read it before you vote.",
        ),
        def::<JobTasksArgs>(
            "job_tasks",
            Read,
            "A job's tasks in order: the plan task (index 0; its result holds the plan's \
             task_specs) and the work tasks, each with its status, agent, progress, result or \
             error.",
        ),
        def::<JobEventsArgs>(
            "job_events",
            Read,
            "A job's history as events, oldest first: submitted, votes, plan, each task claimed, \
             progressing, completed or failed. Page with after (the last id you saw).",
        ),
        def::<SubmitJob>(
            "submit_job",
            Write,
            "Submit a job for the fleet: a title and a job_spec (any JSON; best an object with \
             goal, inputs, acceptance criteria). It waits for approvals by other agents (you \
             cannot approve your own), then one agent plans it into tasks and many work them.",
        ),
        def::<ApproveArgs>(
            "approve_job",
            Write,
            "Approve a job that waits for votes (status committed or approving) after reading \
             it with get_job: approve only a job that is clear, feasible and safe, else \
             reject_job. Each distinct agent's approval counts; at the quorum the job is \
             accepted and planned. Not your own job; votes are spaced by a cooldown (a refusal \
             says when you may vote again).",
        ),
        def::<RejectArgs>(
            "reject_job",
            Destructive,
            "Reject a job that waits for votes, with the reason: it fails at once and the \
             reason is shown to everyone. For a job that is unclear, impossible, unsafe or a \
             duplicate.",
        ),
        def::<ApproveArgs>(
            "approve_plan",
            Write,
            "Approve the plan of a job under plan review (status ready, plan_approvals below \
             plan_approvals_required) after reading it (job_tasks: the plan task's result). \
             At the quorum its work tasks are created. Not a plan you wrote.",
        ),
        def::<RejectArgs>(
            "reject_plan",
            Write,
            "Reject the plan under review with what to change: the job is planned again, and \
             the next planner reads your reason.",
        ),
        def::<ClaimArgs>(
            "claim_task",
            Write,
            "Take the next task to work on, and start it. Waits up to wait_secs (at most 50) \
             when none is pending; answers task null when there is none. The answer holds the \
             task (task_spec says what to do; a plan task's spec carries the job), inputs (the \
             results of the tasks it depends on, by name), the job's title and spec, lease_id \
             and the deadline. Only tasks whose requires your capabilities cover come to you. \
             Then work, call report_progress at \
             least every heartbeat_secs (default 900) or the task goes back to the queue, and \
             finish with complete_task (submit_plan for a plan task) or fail_task.",
        ),
        def::<ProgressArgs>(
            "report_progress",
            Write,
            "Report progress (0 to 100) and a line on what is happening, on a task you hold. \
             extend_secs pushes its deadline out when the work takes longer.",
        ),
        def::<CompleteArgs>(
            "complete_task",
            Write,
            "Finish a work task with its result (any JSON: what you produced, where it is, how \
             you checked it). A plan task takes submit_plan.",
        ),
        def::<FailArgs>(
            "fail_task",
            Write,
            "Give up on a task you hold, saying what went wrong. It goes back to the queue for \
             another try (by any agent) unless retryable is false or its retries are used up.",
        ),
        def::<SubmitPlanArgs>(
            "submit_plan",
            Write,
            "Finish a plan task with the plan: task_specs, the work tasks agents will take in \
             parallel (each one agent's job, self-contained: goal, inputs, acceptance, \
             result_format). An entry may instead be {spec, name, depends_on, requires, key, \
             timeout_secs, max_retries}: a task with depends_on (names or 0-based positions) \
             waits until those complete and receives their results as inputs; requires lists \
             capabilities its agent must have; tasks sharing a key (say a file they edit) never \
             run at once. A mistake (unknown name, cycle, duplicate name) is refused saying \
             which entry to fix, and nothing is written.",
        ),
    ]
}

fn tool(d: &Def) -> Tool {
    let mut annotations = ToolAnnotations::new();
    annotations.read_only_hint = Some(matches!(d.kind, Kind::Read));
    annotations.destructive_hint = Some(matches!(d.kind, Kind::Destructive));
    annotations.open_world_hint = Some(false);
    Tool::new(d.name, d.description, (d.schema)()).with_annotations(annotations)
}

/// Every tool, for `tools/list`.
pub fn list() -> Vec<Tool> {
    defs().iter().map(tool).collect()
}

/// One tool by name.
pub fn find(name: &str) -> Option<Tool> {
    defs().iter().find(|d| d.name == name).map(tool)
}

/// Runs a tool and counts it in `agora_mcp_tool_calls_total{tool, outcome}` (`ok` or the error
/// code). `None` for a tool that does not exist.
pub async fn call(
    state: &AppState,
    caller: AgentAuth,
    name: &str,
    arguments: JsonObject,
    cancel: &CancellationToken,
) -> Option<CallToolResult> {
    let def = defs().into_iter().find(|d| d.name == name)?;
    let result = run(state, caller, def.name, arguments, cancel).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.code().as_str(),
    };
    metrics::counter!("agora_mcp_tool_calls_total", "tool" => def.name, "outcome" => outcome)
        .increment(1);
    Some(match result {
        Ok(value) => answer(value),
        Err(e) => refusal(&e),
    })
}

/// A tool's answer: the JSON as text (for models) and as structured content.
fn answer(value: Value) -> CallToolResult {
    let text = serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string());
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(value);
    result
}

/// A refused call as a model can act on it: `CODE: message (field: …)`, and the error body
/// as structured content.
fn refusal(e: &ApiError) -> CallToolResult {
    if matches!(e, ApiError::Database(_) | ApiError::Internal(_)) {
        tracing::error!(error = ?e, "MCP tool call failed");
    }
    let body = e.body();
    let mut text = super::error_line(&body);
    if let Some(field) = &body.field {
        text.push_str(&format!(" (argument: {field})"));
    }
    let mut result = CallToolResult::error(vec![ContentBlock::text(text)]);
    result.structured_content = Some(json!({ "error": body }));
    result
}

fn to_value(v: impl Serialize) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| ApiError::Internal(e.into()))
}

async fn run(
    state: &AppState,
    me: AgentAuth,
    name: &str,
    arguments: JsonObject,
    cancel: &CancellationToken,
) -> Result<Value> {
    match name {
        "whoami" => {
            args::parse::<NoArgs>(arguments)?;
            whoami(state, me).await
        }
        "list_jobs" => {
            let q: JobListQuery = args::parse(arguments)?;
            to_value(ops::jobs::list(state, &q).await?)
        }
        "get_job" => {
            let a: JobArgs = args::parse(arguments)?;
            super::job_with_votes(state, a.job_id).await
        }
        "job_tasks" => {
            let a: JobTasksArgs = args::parse(arguments)?;
            to_value(ops::jobs::tasks(state, a.job_id, &a.query).await?)
        }
        "job_events" => {
            let a: JobEventsArgs = args::parse(arguments)?;
            let events = ops::jobs::events(state, a.job_id, &a.query).await?;
            Ok(json!({ "events": events }))
        }
        "submit_job" => {
            let mut body: SubmitJob = args::parse(arguments)?;
            body.submitted_by.get_or_insert(me.0);
            to_value(ops::jobs::submit(state, Some(me), body).await?.job)
        }
        "approve_job" | "approve_plan" | "reject_job" | "reject_plan" => {
            vote(state, me, name, arguments).await
        }
        "claim_task" => claim(state, me, args::parse(arguments)?, cancel).await,
        "report_progress" => {
            let a: ProgressArgs = args::parse(arguments)?;
            to_value(ops::tasks::progress(state, me, a.task_id, a.body).await?)
        }
        "complete_task" => {
            let a: CompleteArgs = args::parse(arguments)?;
            to_value(
                ops::tasks::complete(state, me, a.task_id, a.body, false)
                    .await?
                    .task,
            )
        }
        "fail_task" => {
            let a: FailArgs = args::parse(arguments)?;
            to_value(
                ops::tasks::fail(state, me, a.task_id, a.body, false)
                    .await?
                    .task,
            )
        }
        "submit_plan" => submit_plan(state, me, args::parse(arguments)?).await,
        other => Err(ApiError::NotFound(format!("no tool {other}"))),
    }
}

/// A vote as the caller: `approve_*` or `reject_*`, on the job or on its plan (`*_plan`).
async fn vote(state: &AppState, me: AgentAuth, tool: &str, arguments: JsonObject) -> Result<Value> {
    let (job_id, verdict, text) = if tool.starts_with("approve") {
        let a: ApproveArgs = args::parse(arguments)?;
        (a.job_id, Verdict::Approve, a.comment)
    } else {
        let a: RejectArgs = args::parse(arguments)?;
        (a.job_id, Verdict::Reject, Some(a.reason))
    };
    let stage = if tool.ends_with("_plan") {
        Stage::Plan
    } else {
        Stage::Job
    };
    let ballot = Ballot::new(VoteBody::new(verdict, Some(me.0), None, text), stage)?;
    to_value(ops::votes::cast(state, job_id, ballot).await?)
}

async fn whoami(state: &AppState, me: AgentAuth) -> Result<Value> {
    let agent = state.store.agent_get(me.0).await?;
    let mut held = Vec::new();
    for status in agora_shared::TaskStatus::ACTIVE {
        let page = state
            .store
            .task_list(crate::store::TaskListParams {
                job_id: None,
                status: Some(status),
                agent_id: Some(me.0),
                limit: agora_shared::MAX_PAGE_LIMIT,
                offset: 0,
            })
            .await?;
        held.extend(page.items);
    }
    Ok(json!({
        "agent": agent,
        "gate": state.config.gate_settings(),
        "tasks_held": held,
    }))
}

/// Claims a task (the REST claim, long-poll included) and starts it at once under a heartbeat
/// lease: a model works on what it claims, and a session that dies gives its task back within
/// `heartbeat_secs`. A claim the client cancels stops waiting; a task claimed as it cancelled
/// goes back to pending (no attempt counted).
async fn claim(
    state: &AppState,
    me: AgentAuth,
    a: ClaimArgs,
    cancel: &CancellationToken,
) -> Result<Value> {
    if let Some(w) = a.wait_secs {
        agora_shared::validate::range("wait_secs", w, 0, MAX_CLAIM_WAIT_SECS)?;
    }
    let heartbeat = match a.heartbeat_secs.unwrap_or(DEFAULT_HEARTBEAT_SECS) {
        0 => None,
        secs => Some(secs),
    };
    let start = StartTask {
        lease_id: None,
        heartbeat_secs: heartbeat,
    };
    start.validate()?;
    let body = ClaimTask {
        agent_id: me.0,
        wait_secs: a.wait_secs,
        request_id: a.request_id,
    };
    let claimed = tokio::select! {
        claimed = ops::tasks::claim(state, me, body, "mcp") => claimed?,
        _ = cancel.cancelled() => {
            return Err(ApiError::Unavailable("the client cancelled the claim".into()));
        }
    };
    let Some(mut claimed) = claimed else {
        return Ok(json!({
            "task": null,
            "message": "no task is pending now: call claim_task again (wait_secs up to 50 waits for one)"
        }));
    };
    if cancel.is_cancelled() {
        let held = crate::store::Held {
            task_id: claimed.task.id,
            lease_id: claimed.lease_id,
        };
        let why = "the MCP client cancelled its claim".to_string();
        state.store.task_decline(me.0, held, why).await?;
        return Err(ApiError::Unavailable(
            "the client cancelled the claim".into(),
        ));
    }
    if claimed.task.status == agora_shared::TaskStatus::Claimed {
        let start = StartTask {
            lease_id: Some(claimed.lease_id),
            ..start
        };
        claimed.task = ops::tasks::start(state, me, claimed.task.id, start).await?;
    }
    // The job's spec too: a work task is one part of it, and the whole helps to do the part.
    let job_spec = state.store.job_get(claimed.job.id).await?.job_spec;
    let mut value = to_value(claimed)?;
    value["job"]["job_spec"] = job_spec;
    Ok(value)
}

/// Completes a plan task with `{"task_specs": …}`, the plan's one shape, checked by the store.
async fn submit_plan(state: &AppState, me: AgentAuth, a: SubmitPlanArgs) -> Result<Value> {
    let task = state.store.task_get(a.task_id).await?;
    if task.task_type != TaskType::Plan {
        return Err(ApiError::validation(
            "task_id",
            format!(
                "task {} is a work task: finish it with complete_task",
                a.task_id
            ),
        ));
    }
    let body = CompleteTask {
        result: json!({ "task_specs": a.task_specs }),
        lease_id: a.lease_id,
    };
    let task = ops::tasks::complete(state, me, a.task_id, body, false)
        .await?
        .task;
    let job = state.store.job_get(task.job_id).await?;
    Ok(json!({ "task": task, "job": job }))
}
