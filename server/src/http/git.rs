//! `/api/jobs/:id/commits` and `/api/jobs/:id/files/*path`: a job's git history.

use agora_shared::{CommitInfo, CommitListQuery, Envelope, ErrorEnvelope, Page, RepoFile};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use uuid::Uuid;

use super::extract::{ok, AppPath, AppQuery};
use crate::error::Result;
use crate::ops;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/jobs/{id}/commits", get(list_job_commits))
        .route("/jobs/{id}/files/{*path}", get(get_job_file))
}

/// The job's git history, newest first, a page at a time.
#[utoipa::path(get, path = "/api/jobs/{id}/commits", tag = "git", params(("id" = Uuid, Path), CommitListQuery),
    responses((status = 200, body = Envelope<Page<CommitInfo>>), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub async fn list_job_commits(
    State(state): State<AppState>,
    AppPath(id): AppPath<Uuid>,
    AppQuery(q): AppQuery<CommitListQuery>,
) -> Result<Json<Envelope<Page<CommitInfo>>>> {
    Ok(ok(ops::git::commits(&state, id, &q).await?))
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
    Ok(ok(ops::git::file(&state, id, path).await?))
}
