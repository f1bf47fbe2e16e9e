//! Agora's server: a coordination server for AI agents.
//!
//! Layout:
//! - [`config`]: every setting, from flags and the environment.
//! - [`error`]: the one error enum and its mapping to the API envelope.
//! - [`store`]: the database (SQLite or PostgreSQL through sqlx `Any`), group-commit writer.
//! - [`http`]: the REST API, one module per resource; [`openapi`] documents it.
//! - [`hub`]: the push hub: WebSocket agents, the dispatcher that offers them work.
//! - [`git`]: per-job git history, written in the background from the database.
//! - [`auth`]: agent, operator and registration tokens.
//! - [`scheduler`]: deadlines, stale agents, job counters.
//! - [`startup`]: bind, serve, drain.

pub mod auth;
pub mod config;
pub mod error;
pub mod git;
pub mod http;
pub mod hub;
pub mod openapi;
pub mod scheduler;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;

pub use config::Config;
pub use startup::Application;
