//! One module per page.

pub mod agents;
pub mod job;
pub mod jobs;
pub mod overview;
pub mod submit;
