//! Health and statistics.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::validate::{self, FieldError};

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
    /// The approval gate's settings: how many approvals a job needs, who may vote.
    #[serde(default)]
    pub gate: crate::review::GateSettings,
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
    /// Pending tasks that no online agent can take, by what they require: each entry's
    /// `requires` is a set no online agent has all of.
    #[serde(default)]
    pub waiting_for_capabilities: Vec<CapabilityWait>,
}

/// Pending tasks waiting for an agent with every capability of `requires`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CapabilityWait {
    pub requires: Vec<String>,
    pub tasks: u64,
}

/// The longest series `GET /api/stats/series` draws: a day, a point a minute.
pub const MAX_SERIES_MINUTES: u32 = 1440;

/// How long the server keeps its per-minute samples of the queue depth and agents online.
pub const SERIES_KEPT_MINUTES: i64 = MAX_SERIES_MINUTES as i64;

/// `GET /api/stats/series`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct StatsSeriesQuery {
    /// How many minutes back, 1 to 1440 (default 60).
    pub minutes: Option<u32>,
}

impl StatsSeriesQuery {
    pub fn minutes(&self) -> Result<u32, FieldError> {
        let m = self.minutes.unwrap_or(60);
        validate::range("minutes", m, 1, MAX_SERIES_MINUTES)?;
        Ok(m)
    }
}

/// How the system did a minute at a time, oldest first; the last point is the minute now
/// running, counted at the moment of the answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatsSeries {
    pub minutes: u32,
    pub points: Vec<StatsPoint>,
}

/// One minute of [`StatsSeries`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatsPoint {
    /// The minute's start.
    pub at: DateTime<Utc>,
    /// Tasks completed in this minute.
    pub completed: u64,
    /// Tasks that failed for good in this minute.
    pub failed: u64,
    /// Tasks waiting for an agent, sampled once in the minute; `null` when the server was not
    /// running to sample it.
    pub pending: Option<u64>,
    /// Agents online, sampled with `pending`.
    pub agents_online: Option<u64>,
}
