//! Agents: registration, their public view, and the approval-rate answer.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::validate::{self, FieldError};
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    Online,
    Offline,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Online => "online",
            AgentStatus::Offline => "offline",
        }
    }
}

impl std::str::FromStr for AgentStatus {
    type Err = crate::UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "online" => Ok(AgentStatus::Online),
            "offline" => Ok(AgentStatus::Offline),
            other => Err(crate::UnknownStatus(other.to_string())),
        }
    }
}

/// An agent as everyone may see it (never its token).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Agent {
    pub id: Uuid,
    pub name: String,
    pub status: AgentStatus,
    pub capabilities: Vec<String>,
    pub registered_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// When it last voted on a job, for the approval cooldown.
    pub last_approved_at: Option<DateTime<Utc>>,
    /// What an operator granted it (`approver`).
    #[serde(default)]
    pub roles: Vec<crate::review::Role>,
}

/// `POST /api/agents/register`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterAgent {
    /// 1 to 100 characters.
    pub name: String,
    /// Free-form tags (at most 64, each at most 64 characters).
    #[serde(default)]
    pub capabilities: Option<Vec<String>>,
}

pub const MAX_AGENT_NAME: usize = 100;
pub const MAX_CAPABILITIES: usize = 64;
pub const MAX_CAPABILITY_LEN: usize = 64;

impl RegisterAgent {
    pub fn validate(&self) -> Result<(), FieldError> {
        validate::text("name", &self.name, MAX_AGENT_NAME)?;
        if let Some(caps) = &self.capabilities {
            if caps.len() > MAX_CAPABILITIES {
                return Err(FieldError::new(
                    "capabilities",
                    format!(
                        "has {} entries; at most {MAX_CAPABILITIES} are allowed",
                        caps.len()
                    ),
                ));
            }
            for (i, c) in caps.iter().enumerate() {
                validate::text(&format!("capabilities[{i}]"), c, MAX_CAPABILITY_LEN)?;
            }
        }
        Ok(())
    }
}

/// The answer to registration: the token is shown once and only its hash is stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Registered {
    pub agent_id: Uuid,
    /// Send as `Authorization: Bearer <token>` on every agent call.
    pub token: String,
    pub agent: Agent,
}

/// `GET /api/agents/:id/can-approve`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CanApprove {
    pub can_approve: bool,
    /// When the cooldown ends; `null` when it may approve now.
    pub next_allowed_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_validation_names_the_field() {
        let ok = RegisterAgent {
            name: "a".into(),
            capabilities: Some(vec!["rust".into()]),
        };
        assert!(ok.validate().is_ok());
        let bad = RegisterAgent {
            name: "".into(),
            capabilities: None,
        };
        assert_eq!(bad.validate().unwrap_err().field, "name");
        let bad = RegisterAgent {
            name: "a".into(),
            capabilities: Some(vec!["ok".into(), " ".into()]),
        };
        assert_eq!(bad.validate().unwrap_err().field, "capabilities[1]");
    }
}
