//! The OpenAPI document, generated from the handlers' annotations and the shared types.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use axum::Json;

use super::{agents, git, jobs, openapi, sse, system, tasks, votes, ws};

#[derive(OpenApi)]
#[openapi(
    info(title = "Agora", description = "Coordination server for AI agents: approve, plan and execute jobs."),
    paths(
        agents::register_agent, agents::list_agents, agents::get_agent, agents::heartbeat_agent,
        agents::unregister_agent, agents::can_approve, agents::set_agent_roles,
        jobs::submit_job, jobs::list_jobs, jobs::get_job, jobs::list_job_tasks,
        jobs::list_job_events, jobs::cancel_job,
        votes::list_job_approvals, votes::approve_job, votes::reject_job, votes::approve_plan, votes::reject_plan,
        tasks::list_tasks, tasks::claim_task, tasks::get_task, tasks::start_task, tasks::progress_task, tasks::complete_task,
        tasks::fail_task,
        system::health, system::ready, system::stats, system::stats_series, openapi::openapi,
        ws::agent_ws, sse::stream_events, sse::stream_job, git::list_job_commits, git::get_job_file,
    ),
    modifiers(&Security),
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        // registration_token: only when the server sets REGISTRATION_TOKEN; agent_token on
        // submit: only with `submitted_by`.
        for name in ["agent_token", "admin_token", "registration_token"] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

pub fn router() -> axum::Router<crate::state::AppState> {
    axum::Router::new().route("/openapi.json", axum::routing::get(openapi))
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "system", responses((status = 200, description = "OpenAPI 3.1 document")))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
