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

/// Tasks per directory of a repository's `tasks/` tree: a commit rewrites only the trees on
/// its path, so a shard keeps each commit's cost independent of the job's size.
pub const TASKS_PER_SHARD: u32 = 100;

/// Where a task's files live in its job's repository:
/// `tasks/<first>-<last>/<index>-<first 8 hex of its id>`, e.g. `tasks/100-199/142-0a1b2c3d`.
pub fn task_dir(index: u32, id: uuid::Uuid) -> String {
    let first = u64::from(index - index % TASKS_PER_SHARD);
    let last = first + u64::from(TASKS_PER_SHARD - 1);
    format!(
        "tasks/{first}-{last}/{index}-{}",
        &id.simple().to_string()[..8]
    )
}

/// A file of a job's repository at HEAD.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RepoFile {
    pub path: String,
    /// The file's text (the repository holds JSON files).
    pub content: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_dirs_are_sharded_by_index_range() {
        let id = uuid::Uuid::parse_str("0a1b2c3d-0000-4000-8000-000000000000").unwrap();
        assert_eq!(task_dir(0, id), "tasks/0-99/0-0a1b2c3d");
        assert_eq!(task_dir(99, id), "tasks/0-99/99-0a1b2c3d");
        assert_eq!(task_dir(142, id), "tasks/100-199/142-0a1b2c3d");
        assert_eq!(
            task_dir(u32::MAX, id),
            "tasks/4294967200-4294967299/4294967295-0a1b2c3d"
        );
    }
}
