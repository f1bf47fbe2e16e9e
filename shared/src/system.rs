//! Health and statistics.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `GET /api/health` (liveness) and `GET /api/health/ready` (readiness).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// `ok` when the database answers, `draining` while the server stops, `failed` when a vital
    /// part of the server died (it is stopping, to exit non-zero), else `degraded`.
    pub status: String,
    /// `ok` or `unreachable`.
    pub database: String,
    /// Whether this server takes work: the database answers and it is not draining.
    pub ready: bool,
    /// A stop signal arrived: running tasks may finish, nothing new is handed out.
    pub draining: bool,
    /// `sqlite` or `postgres`.
    pub backend: String,
    pub version: String,
    /// The server listens beyond loopback with open registration or open operator calls
    /// (`ALLOW_OPEN`): anyone who reaches it may register agents, approve and cancel. The
    /// dashboard shows a warning banner.
    #[serde(default)]
    pub open_access: bool,
}

/// `GET /api/stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Stats {
    pub agents_online: u64,
    pub agents_total: u64,
    /// Job count per status name.
    pub jobs: BTreeMap<String, u64>,
    /// Task count per status name.
    pub tasks: BTreeMap<String, u64>,
    /// Tasks completed in the last 60 seconds.
    pub tasks_completed_last_minute: u64,
    /// The newest event id (0 when there is none).
    pub last_event_id: i64,
}
