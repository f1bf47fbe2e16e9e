//! The MCP resources: each job as `agora://jobs/{id}` (the job with its spec and votes) and each
//! file of its git history as `agora://jobs/{id}/files/{path}`, listed newest job first.

use agora_shared::JobListQuery;
use rmcp::model::{
    ErrorData, ListResourceTemplatesResult, ListResourcesResult, ReadResourceResult, Resource,
    ResourceContents, ResourceTemplate,
};
use uuid::Uuid;

use crate::error::ApiError;
use crate::ops;
use crate::state::AppState;

const PREFIX: &str = "agora://jobs/";
/// Jobs per page of `resources/list` (each with its files).
const JOBS_PER_PAGE: u32 = 20;

fn job_uri(id: Uuid) -> String {
    format!("{PREFIX}{id}")
}

fn file_uri(id: Uuid, path: &str) -> String {
    format!("{PREFIX}{id}/files/{path}")
}

fn mime_of(path: &str) -> &'static str {
    if path.ends_with(".json") {
        "application/json"
    } else {
        "text/plain"
    }
}

/// What a refused read looks like to the client: the error's code and message.
fn refused(e: ApiError) -> ErrorData {
    let text = super::error_line(&e.body());
    match e {
        ApiError::NotFound(_) | ApiError::Validation(_) => {
            ErrorData::resource_not_found(text, None)
        }
        _ => ErrorData::internal_error(text, None),
    }
}

/// A page of jobs, newest first, each followed by its files; the cursor is the next offset.
pub async fn list(
    state: &AppState,
    cursor: Option<String>,
) -> Result<ListResourcesResult, ErrorData> {
    let offset = match cursor {
        None => 0,
        Some(c) => c
            .parse::<u64>()
            .map_err(|_| ErrorData::invalid_params(format!("unknown cursor {c:?}"), None))?,
    };
    let query = JobListQuery {
        limit: Some(JOBS_PER_PAGE),
        offset: Some(offset),
        ..JobListQuery::default()
    };
    let page = ops::jobs::list(state, &query).await.map_err(refused)?;
    let mut resources = Vec::new();
    for job in &page.items {
        resources.push(
            Resource::new(job_uri(job.id), job.title.clone())
                .with_description(format!("job {} ({})", job.id, job.status))
                .with_mime_type("application/json"),
        );
        for path in ops::git::files(state, job.id).await.map_err(refused)? {
            resources.push(
                Resource::new(file_uri(job.id, &path), format!("{}: {path}", job.title))
                    .with_mime_type(mime_of(&path)),
            );
        }
    }
    let mut result = ListResourcesResult::with_all_items(resources);
    let next = offset + page.items.len() as u64;
    if next < page.total {
        result.next_cursor = Some(next.to_string());
    }
    Ok(result)
}

pub fn templates() -> ListResourceTemplatesResult {
    ListResourceTemplatesResult::with_all_items(vec![
        ResourceTemplate::new(format!("{PREFIX}{{job_id}}"), "job")
            .with_description("A job: its spec, status, counters and votes.")
            .with_mime_type("application/json"),
        ResourceTemplate::new(format!("{PREFIX}{{job_id}}/files/{{path}}"), "job file")
            .with_description(
                "A file of the job's git history at its latest commit: job.json, plan.json, \
                 tasks/<n>-<id>/spec.json, tasks/<n>-<id>/result.json, …",
            ),
    ])
}

/// Reads `agora://jobs/{id}` or `agora://jobs/{id}/files/{path}`.
pub async fn read(state: &AppState, uri: &str) -> Result<ReadResourceResult, ErrorData> {
    let unknown = || {
        ErrorData::resource_not_found(
            format!("no resource {uri}: Agora's are agora://jobs/{{id}} and agora://jobs/{{id}}/files/{{path}}"),
            None,
        )
    };
    let rest = uri.strip_prefix(PREFIX).ok_or_else(unknown)?;
    let (id, path) = match rest.split_once("/files/") {
        Some((id, path)) => (id, Some(path)),
        None => (rest, None),
    };
    let id = Uuid::parse_str(id).map_err(|_| unknown())?;
    let contents = match path {
        None => {
            let job = super::job_with_votes(state, id).await.map_err(refused)?;
            let text = serde_json::to_string_pretty(&job)
                .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
            ResourceContents::text(text, uri).with_mime_type("application/json")
        }
        Some(path) => {
            let file = ops::git::file(state, id, path.to_string())
                .await
                .map_err(refused)?;
            ResourceContents::text(file.content, uri).with_mime_type(mime_of(path))
        }
    };
    Ok(ReadResourceResult::new(vec![contents]))
}
