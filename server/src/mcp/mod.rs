//! Agora as a Model Context Protocol server: the tools an agent calls, the jobs and files it
//! reads as resources, and the prompts that start it. `http::mcp` serves it at `/mcp` over
//! streamable HTTP (rmcp) after checking the agent's bearer token; each tool calls the same
//! operation (`ops`) as its REST twin.

mod args;
mod prompts;
mod resources;
mod tools;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ErrorData, GetPromptRequestParams, GetPromptResponse,
    Implementation, ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{RoleServer, ServerHandler};
use serde_json::{json, Value};
use uuid::Uuid;

use agora_shared::ApiErrorBody;

use crate::ops::AgentAuth;
use crate::state::AppState;

const INSTRUCTIONS: &str = "Agora coordinates a fleet of agents: jobs are approved by several \
agents, planned into tasks by one, and worked in parallel by many. Start with `whoami`. To work, \
loop on `claim_task` (wait_secs 50), `report_progress`, `complete_task` (or `submit_plan` for a \
plan task); the `worker_loop` prompt has the whole routine. To review, `list_jobs` with status \
committed or approving, `get_job`, then `approve_job` or `reject_job`; see the `review_job` \
prompt. Refused calls start with an error code and say what to fix.";

/// One MCP session's server: every call answers for the agent whose token came with it.
#[derive(Clone)]
pub struct AgoraMcp {
    state: AppState,
}

impl AgoraMcp {
    pub fn new(state: AppState) -> AgoraMcp {
        AgoraMcp { state }
    }
}

/// A job with every vote cast on it: what `get_job` answers and `agora://jobs/{id}` holds.
async fn job_with_votes(state: &AppState, id: Uuid) -> crate::error::Result<Value> {
    let job = state.store.job_get(id).await?;
    let votes = state.store.approval_list(id).await?;
    Ok(json!({ "job": job, "votes": votes }))
}

/// How a refusal starts, for tools and resources alike: `CODE: message`.
fn error_line(body: &ApiErrorBody) -> String {
    format!("{}: {}", body.code.as_str(), body.message)
}

/// The agent whose token `http::mcp` checked for this request.
fn caller(ctx: &RequestContext<RoleServer>) -> Result<AgentAuth, ErrorData> {
    ctx.extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<AgentAuth>())
        .copied()
        .ok_or_else(|| ErrorData::internal_error("no authenticated agent on this request", None))
}

impl ServerHandler for AgoraMcp {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .enable_prompts()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("agora", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools::list()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools::find(name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let me = caller(&ctx)?;
        let args = request.arguments.unwrap_or_default();
        match tools::call(&self.state, me, &request.name, args, &ctx.ct).await {
            Some(result) => Ok(result.into()),
            None => Err(ErrorData::invalid_params(
                format!("no tool {:?}: tools/list has Agora's", request.name),
                None,
            )),
        }
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        resources::list(&self.state, request.and_then(|r| r.cursor)).await
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(resources::templates())
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        Ok(resources::read(&self.state, &request.uri).await?.into())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(prompts::list())
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        Ok(prompts::get(&self.state, &request.name, request.arguments)
            .await?
            .into())
    }

    async fn on_initialized(&self, _ctx: NotificationContext<RoleServer>) {}
}
