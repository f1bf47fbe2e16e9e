//! Agora's shared vocabulary: every type that crosses the wire and the domain rules that decide
//! what may happen to jobs and tasks. Server, client and dashboard all depend on this crate, so a
//! field renamed here is renamed everywhere.
//!
//! Layout:
//! - [`lifecycle`]: the 8-state job machine (`JobStatus::transition`) and the approval path.
//! - [`task_rules`]: task states, which action is legal in which state, and the retry rule.
//! - [`lease`]: leases per delivery: which lease may report, backoff, the delivery limit.
//! - [`plan`]: validation of a plan task's `result.task_specs`.
//! - [`review`]: the approval gate: who may vote on a job or its plan, and what a rejection does.
//! - [`api`]: the response envelope and the stable error codes.
//! - [`agent`], [`job`], [`task`], [`event`], [`history`], [`system`]: request and response bodies.
//!
//! No I/O, no async runtime: it compiles for native targets and for wasm32.

pub mod agent;
pub mod api;
pub mod event;
pub mod graph;
pub mod history;
pub mod job;
pub mod lease;
pub mod lifecycle;
pub mod plan;
pub mod query;
pub mod review;
pub mod system;
pub mod tag_first;
pub mod task;
pub mod task_rules;
pub mod validate;
pub mod wire_time;
pub mod ws;

pub use agent::*;
pub use api::*;
pub use event::*;
pub use graph::{can_take, critical_path, layers, waiting_for};
pub use history::*;
pub use job::*;
pub use lease::*;
pub use lifecycle::*;
pub use plan::*;
pub use query::*;
pub use review::*;
pub use system::*;
pub use task::*;
pub use task_rules::*;
pub use validate::{FieldError, TooLarge, DEFAULT_MAX_SPEC_BYTES};

/// Timestamps on the wire: RFC 3339 in UTC.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
