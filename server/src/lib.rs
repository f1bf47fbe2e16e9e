//! Agora's server: a coordination server for AI agents.
//!
//! Layout:
//! - [`config`]: every setting, from flags and the environment.
//! - [`error`]: the one error enum and its mapping to the API envelope.
//! - [`store`]: the database: SQLite (one rusqlite writer thread with group commit, sqlx reads)
//!   or PostgreSQL (sqlx).
//! - [`ops`]: what each call does, whatever the transport (REST handlers and MCP tools).
//! - [`http`]: the REST API, one module per resource; `http::openapi` documents it;
//!   `http::mcp` serves [`mcp`] (the MCP tools, resources and prompts) at `/mcp`.
//! - [`json`]: client JSON into typed values, errors naming the field (HTTP and WebSocket).
//! - [`hub`]: the push hub: WebSocket agents, the dispatcher that offers them work.
//! - [`git`]: per-job git history, written in the background from the database.
//! - [`tokens`]: agent tokens (hashes, the cache); `http::auth` checks them on each call.
//! - [`scheduler`]: deadlines, stale agents, job counters.
//! - [`supervise`]: the vital parts watched; one that dies stops the server (exit code 1).
//! - [`fault`]: fault hooks for the supervision tests (debug builds only).
//! - [`startup`]: bind, serve, drain; [`serve`]: the accept loop and its connection limits.

pub mod config;
pub mod error;
pub mod fault;
pub mod frames;
pub mod git;
pub mod http;
pub mod hub;
pub mod json;
pub mod mcp;
pub mod memory;
pub mod ops;
pub mod scheduler;
pub mod segments;
pub mod serve;
pub mod startup;
pub mod state;
pub mod store;
pub mod supervise;
pub mod telemetry;
mod threads;
pub mod tokens;

pub use config::Config;
pub use startup::Application;
