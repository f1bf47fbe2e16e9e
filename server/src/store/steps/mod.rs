//! Steps: the pieces the store's operations are made of, each a few statements on the open
//! transaction of a [`WriteCtx`](super::WriteCtx). The operations (`agents.rs`, `jobs.rs`,
//! `tasks.rs`) call steps and never each other; steps call only steps below them: a task step
//! may change its job (`jobs`) and touch its agent (`agents`), a job step may touch an agent,
//! an agent step nothing above it; plan steps (`plans`) insert tasks.

pub(crate) mod agents;
pub(crate) mod graph;
pub(crate) mod jobs;
pub(crate) mod plans;
pub(crate) mod tasks;
