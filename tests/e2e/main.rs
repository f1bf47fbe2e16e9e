//! End-to-end tests: each starts the real server on a random port with its own database and
//! talks HTTP to it.

mod helpers;

mod approvals;
mod auth;
mod bad_input;
mod browser;
mod cancel;
mod claim_race;
mod cli;
mod conformance;
mod crash;
mod dashboard;
mod drain;
mod fuzz;
mod gate;
mod git;
mod graph;
mod graph_browser;
mod hostile;
mod in_flight;
mod key_order;
mod leases;
mod lifecycle;
mod mcp;
mod memory;
mod metrics;
mod plan;
mod push;
mod push_helpers;
mod recovery;
mod replicas;
mod round_trip;
mod safety;
mod sdk;
mod skill;
mod worker;
