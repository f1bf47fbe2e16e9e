//! What each call does, whatever the transport: the REST handlers (`http`) and the MCP tools
//! (`mcp`) both call these, so no rule is written twice. In: the authenticated agent (checked
//! by the transport) and a shared request type; out: a shared answer type or an [`ApiError`].
//!
//! [`ApiError`]: crate::error::ApiError

pub mod git;
pub mod jobs;
pub mod tasks;
pub mod votes;

use uuid::Uuid;

use crate::error::ApiError;

/// The authenticated agent of a call (its token checked by the transport).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentAuth(pub Uuid);

impl AgentAuth {
    /// 403 unless the agent acts for itself.
    pub fn require(self, agent_id: Uuid) -> Result<(), ApiError> {
        if self.0 == agent_id {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this token belongs to agent {}, not to agent {agent_id}",
                self.0
            )))
        }
    }
}
