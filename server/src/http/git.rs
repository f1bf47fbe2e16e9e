//! `/api/jobs/:id/commits` and `/api/jobs/:id/files/*path`: a job's git history.

use agora_shared::{CommitInfo, CommitListQuery, Envelope, ErrorEnvelope, Page, RepoFile};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use uuid::Uuid;

use super::extract::{ok, AppPath, AppQuery};
use crate::error::{ApiError, Result};
use crate::git::{check_path, GitHistory};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/jobs/{id}/commits", get(list_job_commits))
        .route("/jobs/{id}/files/{*path}", get(get_job_file))
}

fn history(state: &AppState) -> Result<&GitHistory> {
    state.git.as_ref().ok_or_else(|| {
        ApiError::NotFound("git history is disabled on this server (GIT_ENABLED=false)".into())
    })
}

/// The job's git history, newest first, a page at a time.
#[utoipa::path(get, path = "/api/jobs/{id}/commits", tag = "git", params(("id" = Uuid, Path), CommitListQuery),
    responses((status = 200, body = Envelope<Page<CommitInfo>>), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub async fn list_job_commits(
    State(state): State<AppState>,
    AppPath(id): AppPath<Uuid>,
    AppQuery(q): AppQuery<CommitListQuery>,
) -> Result<Json<Envelope<Page<CommitInfo>>>> {
    let git = history(&state)?;
    let (limit, offset) = (q.limit()?, q.offset()?);
    state.store.job_get(id).await?;
    let (items, total) = git.commits(id, offset, limit).await?;
    Ok(ok(Page {
        items,
        total,
        limit,
        offset,
    }))
}

/// A file of the job's repository at HEAD, e.g. `job.json`, `plan.json`,
/// `tasks/1-0a1b2c3d/result.json`.
#[utoipa::path(get, path = "/api/jobs/{id}/files/{path}", tag = "git",
    params(("id" = Uuid, Path), ("path" = String, Path, description = "a path inside the repository")),
    responses((status = 200, body = Envelope<RepoFile>), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub async fn get_job_file(
    State(state): State<AppState>,
    AppPath((id, path)): AppPath<(Uuid, String)>,
) -> Result<Json<Envelope<RepoFile>>> {
    let git = history(&state)?;
    check_path(&path).map_err(|m| ApiError::validation("path", m))?;
    state.store.job_get(id).await?;
    let content = git
        .read(id, path.clone())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {id} has no file {path}")))?;
    Ok(ok(RepoFile {
        path,
        content: String::from_utf8_lossy(&content).into_owned(),
    }))
}
