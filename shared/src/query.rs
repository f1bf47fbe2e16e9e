//! Query strings of the list endpoints.

use serde::{Deserialize, Serialize};

use crate::agent::AgentStatus;
use crate::api::{DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT};
use crate::lifecycle::JobStatus;
use crate::task_rules::TaskStatus;
use crate::validate::{self, FieldError};

/// `GET /api/jobs`: newest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct JobListQuery {
    /// Only jobs in this state.
    pub status: Option<JobStatus>,
    /// Only jobs whose title contains this text, ignoring case (at most 200 characters).
    pub q: Option<String>,
    /// Page size, 1 to 1000 (default 50).
    pub limit: Option<u32>,
    /// Items to skip.
    pub offset: Option<u64>,
}

/// `GET /api/agents`: online first, then the most recently seen.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct AgentListQuery {
    /// Only agents in this state.
    pub status: Option<AgentStatus>,
    /// Page size, 1 to 1000 (default 50).
    pub limit: Option<u32>,
    /// Items to skip.
    pub offset: Option<u64>,
}

/// `GET /api/jobs/:id/commits`: newest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct CommitListQuery {
    /// Page size, 1 to 1000 (default 50).
    pub limit: Option<u32>,
    /// Items to skip.
    pub offset: Option<u64>,
}

/// Longest `q` a job search takes.
pub const MAX_SEARCH_CHARS: usize = 200;

/// `GET /api/jobs/:id/tasks` (in index order) and `GET /api/tasks` (newest first).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct TaskListQuery {
    /// Only tasks in this state.
    pub status: Option<TaskStatus>,
    /// Only tasks assigned to this agent.
    pub agent_id: Option<uuid::Uuid>,
    /// Page size, 1 to 1000 (default 50).
    pub limit: Option<u32>,
    /// Items to skip.
    pub offset: Option<u64>,
}

/// `GET /api/jobs/:id/events`: oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct EventListQuery {
    /// Only events with a larger id.
    pub after: Option<i64>,
    /// `asc` (the default: oldest first) or `desc` (newest first, for the latest events).
    #[cfg_attr(feature = "openapi", param(inline))]
    pub order: Option<SortOrder>,
    /// Page size, 1 to 1000 (default 1000).
    pub limit: Option<u32>,
}

/// The direction of a list.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    #[default]
    Asc,
    Desc,
}

/// The largest offset a list takes (the databases count in signed 64-bit integers).
pub const MAX_OFFSET: u64 = i64::MAX as u64;

/// An offset within bounds (default 0), or why not.
pub fn page_offset(offset: Option<u64>) -> Result<u64, FieldError> {
    let offset = offset.unwrap_or(0);
    validate::range("offset", offset, 0, MAX_OFFSET)?;
    Ok(offset)
}

/// A page size within bounds, or why not.
pub fn page_limit(limit: Option<u32>, default: u32) -> Result<u32, FieldError> {
    let limit = limit.unwrap_or(default);
    validate::range("limit", limit, 1, MAX_PAGE_LIMIT)?;
    Ok(limit)
}

/// `limit()` (default 50) and `offset()` of the lists that page by `limit` and `offset`.
macro_rules! paged {
    ($($query:ty),*) => {$(
        impl $query {
            pub fn limit(&self) -> Result<u32, FieldError> {
                page_limit(self.limit, DEFAULT_PAGE_LIMIT)
            }

            pub fn offset(&self) -> Result<u64, FieldError> {
                page_offset(self.offset)
            }
        }
    )*};
}
paged!(JobListQuery, TaskListQuery, AgentListQuery, CommitListQuery);

impl JobListQuery {
    /// The search text, trimmed; `None` when empty.
    pub fn search(&self) -> Result<Option<String>, FieldError> {
        let q = self.q.as_deref().map(str::trim).unwrap_or("");
        if q.chars().count() > MAX_SEARCH_CHARS {
            return Err(FieldError::new(
                "q",
                format!("must be at most {MAX_SEARCH_CHARS} characters"),
            ));
        }
        Ok((!q.is_empty()).then(|| q.to_string()))
    }
}

impl EventListQuery {
    pub fn limit(&self) -> Result<u32, FieldError> {
        page_limit(self.limit, MAX_PAGE_LIMIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(page_limit(None, 50), Ok(50));
        assert_eq!(page_limit(Some(0), 50).unwrap_err().field, "limit");
        assert!(page_limit(Some(1001), 50).is_err());
        assert_eq!(page_offset(None), Ok(0));
        assert_eq!(page_offset(Some(MAX_OFFSET)), Ok(MAX_OFFSET));
        assert_eq!(
            page_offset(Some(MAX_OFFSET + 1)).unwrap_err().field,
            "offset"
        );
    }
}
