//! A job's git history as the API shows it (`/api/jobs/:id/commits`, `/api/jobs/:id/files/*`).

use serde::{Deserialize, Serialize};

/// One commit of a job's repository.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommitInfo {
    pub id: String,
    pub message: String,
    pub author: String,
    pub time: chrono::DateTime<chrono::Utc>,
    /// Paths added or changed by the commit.
    pub files: Vec<String>,
}

/// A file of a job's repository at HEAD.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RepoFile {
    pub path: String,
    /// The file's text (the repository holds JSON files).
    pub content: String,
}
