//! Agents: online or offline, what each is running now, when it was last heard from.

use std::collections::HashMap;

use agora_shared::{AgentListQuery, Task, TaskListQuery, TaskStatus};
use leptos::prelude::*;
use uuid::Uuid;

use crate::api;
use crate::components::{ago, fetched, short, show, Pager, UrlPage, PER_PAGE};

#[component]
pub fn AgentsPage() -> impl IntoView {
    let page = UrlPage::new("page");
    // The server pages the list, online first, then the most recently seen.
    let agents = fetched(
        move || {
            Some(AgentListQuery {
                status: None,
                limit: Some(PER_PAGE as u32),
                offset: Some(page.get() * PER_PAGE),
            })
        },
        api::agents,
    );
    let stats = fetched(|| Some(()), |()| api::stats());
    let running = fetched(
        || {
            Some(TaskListQuery {
                status: Some(TaskStatus::Running),
                agent_id: None,
                limit: Some(1000),
                offset: None,
            })
        },
        api::tasks,
    );
    let held = move || {
        let mut by_agent: HashMap<Uuid, Vec<Task>> = HashMap::new();
        if let Some(Ok(p)) = running.get() {
            for t in p.items {
                if let Some(a) = t.agent_id {
                    by_agent.entry(a).or_default().push(t);
                }
            }
        }
        by_agent
    };
    let online = move || match stats.get() {
        Some(Ok(s)) => format!("{} online of {}", s.agents_online, s.agents_total),
        _ => String::new(),
    };
    view! {
        <h1>"Agents"</h1>
        <p>{online}</p>
        {show(agents, move |p| {
            let total = p.total;
            let held = held();
            view! {
                <div class="table-scroll" role="region" aria-label="Agents (scrolls sideways on a narrow screen)" tabindex="0">
                <table class="agents">
                    <thead>
                        <tr>
                            <th scope="col">"Name"</th>
                            <th scope="col">"State"</th>
                            <th scope="col">"Running"</th>
                            <th scope="col">"Roles"</th>
                            <th scope="col">"Capabilities"</th>
                            <th scope="col">"Last seen"</th>
                        </tr>
                    </thead>
                    <tbody>
                        {p.items.into_iter().map(|a| {
                            let tasks = held.get(&a.id).cloned().unwrap_or_default();
                            let s = a.status.as_str();
                            view! {
                                <tr data-agent=a.id.to_string()>
                                    <td>{a.name.clone()}</td>
                                    <td><span class=format!("badge agent-{s}")>{s}</span></td>
                                    <td>
                                        {if tasks.is_empty() {
                                            view! { <span class="muted">"—"</span> }.into_any()
                                        } else {
                                            tasks.into_iter().map(|t| view! {
                                                <a href=format!("/jobs/{}", t.job_id)>{format!("task {} of {}", t.index, short(&t.job_id))}</a>
                                                " "
                                            }).collect_view().into_any()
                                        }}
                                    </td>
                                    <td class="agent-roles">{a.roles.iter().map(|r| view! { <span class="badge role">{r.as_str()}</span> " " }).collect_view()}</td>
                                    <td>{a.capabilities.join(", ")}</td>
                                    <td><time datetime=a.last_seen_at.to_rfc3339()>{ago(&a.last_seen_at)}</time></td>
                                </tr>
                            }
                        }).collect_view()}
                    </tbody>
                </table>
                </div>
                <Pager page=page total=total what="agents"/>
            }
        })}
    }
}
