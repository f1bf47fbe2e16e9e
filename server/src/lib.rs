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
//! - [`supervise`]: the vital parts watched; one that dies stops the server (exit code 1).
//! - [`fault`]: fault hooks for the supervision tests (debug builds only).
//! - [`startup`]: bind, serve, drain; [`serve`]: the accept loop and its connection limits.

pub mod auth;
pub mod config;
pub mod error;
pub mod fault;
pub mod git;
pub mod http;
pub mod hub;
pub mod openapi;
pub mod scheduler;
pub mod serve;
pub mod startup;
pub mod state;
pub mod store;
pub mod supervise;
pub mod telemetry;

pub use config::Config;
pub use startup::Application;
