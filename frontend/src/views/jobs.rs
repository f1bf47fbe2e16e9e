//! The jobs list: status badges, progress bars, a filter by state and a title search, a page at
//! a time.

use agora_shared::{Job, JobListQuery, JobStatus};
use leptos::prelude::*;

use crate::api;
use crate::components::{
    ago, fetched, show, JobBadge, Pager, Progress, UrlPage, UrlText, PER_PAGE,
};

/// Jobs as table rows, linking to each job.
#[component]
pub fn JobsTable(jobs: Vec<Job>) -> impl IntoView {
    if jobs.is_empty() {
        return view! { <p class="muted">"No jobs."</p> }.into_any();
    }
    view! {
        <div class="table-scroll" role="region" aria-label="Jobs (scrolls sideways on a narrow screen)" tabindex="0">
        <table class="jobs">
            <thead>
                <tr>
                    <th scope="col">"Title"</th>
                    <th scope="col">"State"</th>
                    <th scope="col">"Approvals"</th>
                    <th scope="col">"Tasks"</th>
                    <th scope="col">"Submitted"</th>
                </tr>
            </thead>
            <tbody>
                {jobs
                    .into_iter()
                    .map(|j| {
                        view! {
                            <tr data-job=j.id.to_string()>
                                <td><a href=format!("/jobs/{}", j.id)>{j.title.clone()}</a></td>
                                <td><JobBadge status=j.status/></td>
                                <td>{format!("{}/{}", j.approvals, j.approvals_required)}</td>
                                <td>
                                    <Progress done=j.tasks_completed total=j.tasks_total
                                        label=format!("tasks of {}", j.title)/>
                                </td>
                                <td><time datetime=j.created_at.to_rfc3339()>{ago(&j.created_at)}</time></td>
                            </tr>
                        }
                    })
                    .collect_view()}
            </tbody>
        </table>
        </div>
    }
    .into_any()
}

#[component]
pub fn JobsPage() -> impl IntoView {
    // Filter, search and page live in the URL: `/jobs?status=failed&q=nightly&page=2`.
    let status = UrlText::new("status");
    let search = UrlText::typed("q");
    let page = UrlPage::new("page");
    let jobs = fetched(
        move || {
            let q = search.get();
            Some(JobListQuery {
                status: status.get().parse().ok(),
                q: Some(q.trim().to_string()).filter(|q| !q.is_empty()),
                limit: Some(PER_PAGE as u32),
                offset: Some(page.get() * PER_PAGE),
            })
        },
        api::jobs,
    );
    view! {
        <h1>"Jobs"</h1>
        <form class="filters" role="search" on:submit=|ev| ev.prevent_default()>
            <label>
                "State "
                <select id="status-filter" on:change=move |ev| {
                    status.set(event_target_value(&ev));
                    page.set(0);
                }>
                    <option value="" selected=move || status.get().is_empty()>"any"</option>
                    {JobStatus::ALL
                        .into_iter()
                        .map(|s| {
                            view! {
                                <option value=s.as_str() selected=move || status.get() == s.as_str()>
                                    {s.as_str()}
                                </option>
                            }
                        })
                        .collect_view()}
                </select>
            </label>
            <label>
                "Title "
                <input id="search" type="search" placeholder="contains…"
                    prop:value=move || search.get() on:input=move |ev| {
                    search.set(event_target_value(&ev));
                    page.set(0);
                }/>
            </label>
        </form>
        {show(jobs, move |p| view! {
            <JobsTable jobs=p.items/>
            <Pager page=page total=p.total what="jobs"/>
        })}
    }
}
