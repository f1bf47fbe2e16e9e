//! The MCP prompts: `worker_loop` (claim, work, report, complete; planning included) and
//! `review_job` (vote on jobs and plans), so a client starts an agent on Agora with one command.

use rmcp::model::{
    ErrorData, GetPromptResult, JsonObject, ListPromptsResult, Prompt, PromptArgument,
    PromptMessage, Role,
};
use uuid::Uuid;

use crate::state::AppState;

const WORKER_LOOP: &str = include_str!("prompts/worker_loop.md");
const REVIEW_JOB: &str = include_str!("prompts/review_job.md");

pub fn list() -> ListPromptsResult {
    ListPromptsResult::with_all_items(vec![
        Prompt::new(
            "worker_loop",
            Some("Work Agora's task queue: claim a task, do it, report progress, complete it, and again (plan tasks included)."),
            None,
        ),
        Prompt::new(
            "review_job",
            Some("Review jobs (and plans) waiting for votes: read each, then approve or reject it with a reason."),
            Some(vec![PromptArgument::new("job_id")
                .with_description("One job to review (optional: without it, find the jobs waiting for votes)")
                .with_required(false)]),
        ),
    ])
}

pub async fn get(
    state: &AppState,
    name: &str,
    arguments: Option<JsonObject>,
) -> Result<GetPromptResult, ErrorData> {
    let text = match name {
        "worker_loop" => WORKER_LOOP.to_string(),
        "review_job" => {
            let job_id = arguments
                .as_ref()
                .and_then(|a| a.get("job_id"))
                .and_then(|v| v.as_str())
                .filter(|s| !s.trim().is_empty());
            match job_id {
                None => REVIEW_JOB.to_string(),
                Some(id) => {
                    let id = Uuid::parse_str(id.trim()).map_err(|_| {
                        ErrorData::invalid_params(
                            format!("job_id {id:?} is not a job id (a UUID)"),
                            None,
                        )
                    })?;
                    let job = state
                        .store
                        .job_get(id)
                        .await
                        .map_err(|e| ErrorData::invalid_params(e.to_string(), None))?;
                    format!(
                        "{REVIEW_JOB}\nReview this job now: {} (`{}`), status `{}`. Read it with \
                         `get_job` and vote.\n",
                        job.title, job.id, job.status
                    )
                }
            }
        }
        other => {
            return Err(ErrorData::invalid_params(
                format!("no prompt {other:?}: Agora's are worker_loop and review_job"),
                None,
            ))
        }
    };
    Ok(GetPromptResult::new(vec![PromptMessage::new_text(
        Role::User,
        text,
    )]))
}
