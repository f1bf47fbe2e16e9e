//! A job's git history: its commits and its files at HEAD.

use agora_shared::{CommitInfo, CommitListQuery, Page, RepoFile};
use uuid::Uuid;

use crate::error::{ApiError, Result};
use crate::git::{check_path, GitHistory};
use crate::state::AppState;

fn history(state: &AppState) -> Result<&GitHistory> {
    state.git.as_ref().ok_or_else(|| {
        ApiError::NotFound("git history is disabled on this server (GIT_ENABLED=false)".into())
    })
}

/// The job's history, newest first, a page at a time.
pub async fn commits(
    state: &AppState,
    job_id: Uuid,
    q: &CommitListQuery,
) -> Result<Page<CommitInfo>> {
    let git = history(state)?;
    let (limit, offset) = (q.limit()?, q.offset()?);
    state.store.job_get(job_id).await?;
    let (items, total) = git.commits(job_id, offset, limit).await?;
    Ok(Page {
        items,
        total,
        limit,
        offset,
    })
}

/// A file of the job's repository at HEAD.
pub async fn file(state: &AppState, job_id: Uuid, path: String) -> Result<RepoFile> {
    let git = history(state)?;
    check_path(&path).map_err(|m| ApiError::validation("path", m))?;
    state.store.job_get(job_id).await?;
    let content = git
        .read(job_id, path.clone())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {job_id} has no file {path}")))?;
    Ok(RepoFile {
        path,
        content: String::from_utf8_lossy(&content).into_owned(),
    })
}

/// The paths of every file of the job's repository at HEAD (none while git history is off).
pub async fn files(state: &AppState, job_id: Uuid) -> Result<Vec<String>> {
    match &state.git {
        Some(git) => Ok(git.files(job_id).await?),
        None => Ok(Vec::new()),
    }
}
