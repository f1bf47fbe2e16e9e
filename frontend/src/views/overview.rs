//! The overview: agents online, jobs by state, tasks running/pending/failed, throughput in the
//! last minute, charts of the last hour, the newest jobs and the live event feed.

use agora_shared::{JobListQuery, JobStatus};
use leptos::prelude::*;

use crate::api;
use crate::charts::Charts;
use crate::components::{fetched, show, EventList, JobBadge};
use crate::live::use_live;
use crate::views::jobs::JobsTable;

#[component]
fn Card(label: &'static str, value: u64, id: &'static str) -> impl IntoView {
    view! {
        <div class="card" id=id>
            <span class="card-value">{value}</span>
            <span class="card-label">{label}</span>
        </div>
    }
}

#[component]
pub fn Overview() -> impl IntoView {
    let stats = fetched(|| Some(()), |()| api::stats());
    let jobs = fetched(
        || {
            Some(JobListQuery {
                limit: Some(10),
                ..Default::default()
            })
        },
        api::jobs,
    );
    let live = use_live();
    view! {
        <h1>"Overview"</h1>
        <section aria-labelledby="totals">
            <h2 id="totals" class="visually-hidden">"Totals"</h2>
            {show(stats, |s| {
                let tasks = |k: &str| s.tasks.get(k).copied().unwrap_or(0);
                let running = tasks("running") + tasks("claimed");
                view! {
                    <div class="cards">
                        <Card label="agents online" value=s.agents_online id="card-agents"/>
                        <Card label="tasks running" value=running id="card-running"/>
                        <Card label="tasks pending" value=tasks("pending") id="card-pending"/>
                        <Card label="tasks failed" value=tasks("failed") id="card-failed"/>
                        <Card label="tasks done in the last minute" value=s.tasks_completed_last_minute id="card-throughput"/>
                    </div>
                    <h2>"Jobs by state"</h2>
                    <ul class="states">
                        {JobStatus::ALL
                            .into_iter()
                            .map(|st| {
                                let n = s.jobs.get(st.as_str()).copied().unwrap_or(0);
                                view! {
                                    <li>
                                        <a href=format!("/jobs?status={}", st.as_str())>
                                            <JobBadge status=st/>
                                            <span class="count">{n}</span>
                                        </a>
                                    </li>
                                }
                            })
                            .collect_view()}
                    </ul>
                }
            })}
        </section>
        <Charts/>
        <div class="columns">
            <section aria-labelledby="recent-jobs">
                <h2 id="recent-jobs">"Newest jobs"</h2>
                {show(jobs, |page| view! { <JobsTable jobs=page.items/> })}
            </section>
            <section aria-labelledby="live-events">
                <h2 id="live-events">"Live events"</h2>
                {move || view! { <EventList events=live.recent.get().into_iter().take(20).collect()/> }}
            </section>
        </div>
    }
}
