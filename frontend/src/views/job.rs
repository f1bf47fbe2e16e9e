//! One job: its lifecycle as a flow chart, votes (and a person's approve or reject, of the job
//! or of its plan under review), its task graph when the plan has dependencies, tasks (with what
//! each needs or waits for; expand one for spec, result, progress, error, attempts, agent),
//! events, git history, and the operator's cancel.

use std::collections::HashSet;

use agora_shared::{
    Approval, CancelJob, CommitListQuery, ErrorCode, Event, EventKind, EventListQuery, Job,
    SortOrder, Stage, Task, TaskListQuery, TaskStatus, Verdict, VoteBody,
};
use leptos::prelude::*;
use leptos_router::hooks::use_params_map;
use uuid::Uuid;

use crate::api;
use crate::components::{
    ago, fetched, pretty, show, EventList, JobBadge, Pager, Progress, TaskBadge, UrlPage, UrlText,
    PER_PAGE,
};
use crate::flow::FlowChart;
use crate::graph::TaskGraph;
use crate::names::AgentName;

/// Events shown in the timeline.
const TIMELINE: u32 = 100;

#[component]
pub fn JobPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || {
        params
            .with(|p| p.get("id"))
            .filter(|s| s.parse::<Uuid>().is_ok())
    };
    let job = fetched(move || id().and_then(|id| id.parse().ok()), api::job);
    let events = fetched(
        move || {
            let query = EventListQuery {
                after: None,
                order: Some(SortOrder::Desc),
                limit: Some(TIMELINE),
            };
            id().and_then(|id| id.parse().ok()).map(|id| (id, query))
        },
        |(id, query)| api::job_events(id, query),
    );
    view! {
        {move || match id() {
            None => view! { <h1>"No such job"</h1><p class="error">"That is not a job id."</p> }.into_any(),
            Some(id) => view! {
                {show(job, move |j| view! { <JobHeader job=j events=events/> })}
                <Vote id=id.parse().unwrap_or_default() job=job/>
                <div class="columns">
                    <Approvals id=id.clone() job=job/>
                    <section aria-labelledby="timeline">
                        <h2 id="timeline">"Events"</h2>
                        {show(events, |e| view! { <EventList events=e/> })}
                    </section>
                </div>
                <TaskGraph id=id.clone()/>
                <Tasks id=id.clone()/>
                <History id=id/>
            }.into_any(),
        }}
    }
}

#[component]
fn JobHeader(job: Job, events: crate::components::Fetched<Vec<Event>>) -> impl IntoView {
    // Where a failed job failed from: the `from` of its job.failed event.
    let failed_from = move || {
        events.with(|e| {
            e.as_ref()
                .and_then(|r| r.as_ref().ok())
                .and_then(|list| list.iter().find(|e| e.kind() == EventKind::JobFailed))
                .and_then(|e| e.payload.job_change())
                .and_then(|c| c.from)
        })
    };
    let status = job.status;
    let terminal = status.is_terminal();
    view! {
        <h1>
            <span id="job-title">{job.title.clone()}</span>
            " "
            <span id="job-status"><JobBadge status=status/></span>
        </h1>
        <p class="meta">
            <span>{format!("job {}", job.id)}</span>
            <span>{format!("priority {}", job.priority)}</span>
            <span>"submitted " <time datetime=job.created_at.to_rfc3339()>{ago(&job.created_at)}</time></span>
        </p>
        {job.error.clone().map(|e| view! { <p class="error" role="alert">{e}</p> })}
        <figure class="flow-figure" id="flow">
            {move || view! { <FlowChart status=status failed_from=failed_from()/> }}
            <figcaption class="visually-hidden">{format!("The job is {}", status.as_str())}</figcaption>
        </figure>
        <div class="summary">
            <Progress done=job.tasks_completed total=job.tasks_total label="tasks completed"/>
            <span>{format!("{} running, {} failed", job.tasks_running, job.tasks_failed)}</span>
            {(!terminal).then(|| view! { <Cancel id=job.id/> })}
        </div>
        <details class="spec">
            <summary>"Job spec"</summary>
            <pre>{pretty(&job.job_spec)}</pre>
        </details>
    }
}

/// Cancels the job; asks for the admin token when the server wants one.
#[component]
fn Cancel(id: Uuid) -> impl IntoView {
    let open = RwSignal::new(false);
    let need_token = RwSignal::new(false);
    let token = RwSignal::new(String::new());
    let reason = RwSignal::new(String::new());
    let message = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let send = move |_| {
        busy.set(true);
        let body = CancelJob {
            reason: Some(reason.get_untracked()).filter(|r| !r.trim().is_empty()),
        };
        let t = token.get_untracked();
        leptos::task::spawn_local(async move {
            let answer = api::cancel(id, &body, (!t.is_empty()).then_some(t.as_str())).await;
            busy.set(false);
            match answer {
                Ok(_) => {
                    open.set(false);
                    message.set(None);
                }
                Err(e) if e.code == Some(ErrorCode::Unauthorized) => {
                    need_token.set(true);
                    message.set(Some("This server needs the admin token to cancel.".into()));
                }
                Err(e) => message.set(Some(e.to_string())),
            }
        });
    };
    view! {
        <div class="cancel">
            <button type="button" class="danger" on:click=move |_| open.update(|o| *o = !*o)
                aria-expanded=move || open.get().to_string()>
                "Cancel job"
            </button>
            <Show when=move || open.get()>
                <form class="cancel-form" on:submit=move |ev| { ev.prevent_default(); send(()); }>
                    <label>"Reason " <input type="text" on:input=move |ev| reason.set(event_target_value(&ev))/></label>
                    <Show when=move || need_token.get()>
                        <label>"Admin token "
                            <input type="password" autocomplete="off" on:input=move |ev| token.set(event_target_value(&ev))/>
                        </label>
                    </Show>
                    <button type="submit" class="danger" disabled=move || busy.get()>"Cancel it"</button>
                </form>
            </Show>
            {move || message.get().map(|m| view! { <p class="error" role="alert">{m}</p> })}
        </div>
    }
}

/// What a person may vote on now: the job at the gate, or its plan under review.
fn vote_stage(job: &Job) -> Option<Stage> {
    if job.status.accepts_approvals() {
        Some(Stage::Job)
    } else if job.plan_under_review() {
        Some(Stage::Plan)
    } else {
        None
    }
}

/// Approve or reject as a named person (reason required to reject); asks for the admin token
/// when the server wants one, like Cancel. Shown while the job takes votes (or its plan waits
/// for review); what is typed survives the job's refetches.
#[component]
fn Vote(id: Uuid, job: crate::components::Fetched<Job>) -> impl IntoView {
    let stage = move || {
        job.with(|j| match j {
            Some(Ok(j)) => vote_stage(j),
            _ => None,
        })
    };
    let person = RwSignal::new(String::new());
    let text = RwSignal::new(String::new());
    let need_token = RwSignal::new(false);
    let token = RwSignal::new(String::new());
    let message = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let what = move || match stage() {
        Some(Stage::Plan) => "plan",
        _ => "job",
    };
    let send = move |verdict: Verdict| {
        let Some(stage) = stage() else { return };
        let name = person.get_untracked().trim().to_string();
        let words = text.get_untracked().trim().to_string();
        let t = token.get_untracked();
        let said = (!words.is_empty()).then_some(words);
        let body = VoteBody::new(verdict, None, Some(name), said);
        if let Err(e) = body.validate() {
            let hint = match e.field.as_str() {
                "reason" => "A rejection needs a reason.".to_string(),
                "person" => "Give your name: you vote as a person.".to_string(),
                _ => e.to_string(),
            };
            message.set(Some(hint));
            return;
        }
        busy.set(true);
        leptos::task::spawn_local(async move {
            let token = (!t.is_empty()).then_some(t.as_str());
            let answer = api::vote(id, stage, &body, token).await;
            busy.set(false);
            match answer {
                Ok(_) => {
                    text.set(String::new());
                    message.set(None);
                }
                Err(e) if e.code == Some(ErrorCode::Unauthorized) => {
                    need_token.set(true);
                    message.set(Some(
                        "This server needs the admin token to vote as a person.".into(),
                    ));
                }
                Err(e) => message.set(Some(e.to_string())),
            }
        });
    };
    view! {
        <Show when=move || stage().is_some()>
            <form class="vote" id="vote-form" aria-labelledby="vote-title" on:submit=move |ev| ev.prevent_default()>
                <h2 id="vote-title">{move || format!("Review this {} as a person", what())}</h2>
                <label>"Your name "
                    <input type="text" id="vote-person" autocomplete="name" prop:value=person
                        on:input=move |ev| person.set(event_target_value(&ev))/>
                </label>
                <label>"Comment, or the reason to reject "
                    <input type="text" id="vote-text" prop:value=text
                        on:input=move |ev| text.set(event_target_value(&ev))/>
                </label>
                <Show when=move || need_token.get()>
                    <label>"Admin token "
                        <input type="password" id="vote-token" autocomplete="off" prop:value=token
                            on:input=move |ev| token.set(event_target_value(&ev))/>
                    </label>
                </Show>
                <button type="button" id="vote-approve" disabled=move || busy.get()
                    on:click=move |_| send(Verdict::Approve)>{move || format!("Approve {}", what())}</button>
                " "
                <button type="button" id="vote-reject" class="danger" disabled=move || busy.get()
                    on:click=move |_| send(Verdict::Reject)>{move || format!("Reject {}", what())}</button>
                {move || message.get().map(|m| view! { <p class="error" role="alert">{m}</p> })}
            </form>
        </Show>
    }
}

#[component]
fn Approvals(id: String, job: crate::components::Fetched<Job>) -> impl IntoView {
    let approvals = fetched(move || id.parse().ok(), api::approvals);
    let needed = move || {
        job.with(|j| match j {
            Some(Ok(j)) => Some((j.approvals, j.approvals_required)),
            _ => None,
        })
    };
    let plan_review = move || {
        job.with(|j| match j {
            Some(Ok(j)) if j.plan_approvals_required > 0 => Some((
                j.plan_approvals,
                j.plan_approvals_required,
                j.plans_rejected,
                j.plan_under_review(),
            )),
            _ => None,
        })
    };
    view! {
        <section aria-labelledby="approvals" id="approvals-panel">
            <h2 id="approvals">"Approvals"</h2>
            {move || needed().map(|(have, need)| {
                let more = need.saturating_sub(have);
                view! {
                    <p class="approval-count">
                        {format!("{have} of {need}")}
                        {if more > 0 { format!(" — {more} more needed") } else { " — approved".to_string() }}
                    </p>
                }
            })}
            {move || plan_review().map(|(have, need, rejected, waiting)| view! {
                <p class="plan-review">
                    {format!("Plan review: {have} of {need}")}
                    {if waiting { " — waiting for reviewers" } else { "" }}
                    {(rejected > 0).then(|| format!(" — {rejected} plan(s) rejected"))}
                </p>
            })}
            {show(approvals, |list| {
                if list.is_empty() {
                    return view! { <p class="muted">"Nobody has voted yet."</p> }.into_any();
                }
                view! {
                    <ul class="approvals">
                        {list.into_iter().map(vote_item).collect_view()}
                    </ul>
                }.into_any()
            })}
        </section>
    }
}

/// One vote: who (an agent by name, a person marked as one), on what, approve or reject, why.
fn vote_item(a: Approval) -> impl IntoView {
    let who = match a.agent_id {
        Some(id) => view! { <AgentName id=id name=Some(a.agent_name.clone())/> }.into_any(),
        None => view! {
            <span class="person" title=a.voter.clone()>{a.agent_name.clone()}</span>
            " " <span class="badge person-badge">"person"</span>
        }
        .into_any(),
    };
    let (verdict, class) = match a.verdict {
        Verdict::Approve => ("approved", "vote-approve"),
        Verdict::Reject => ("rejected", "vote-reject"),
    };
    let on = match a.plan_round {
        Some(r) => format!(" plan {r}"),
        None => String::new(),
    };
    let words = a.reason.clone().or(a.comment.clone());
    view! {
        <li class=class data-verdict=a.verdict.as_str()>
            <strong>{who}</strong>
            {format!(" {verdict}{on} ")}
            <time datetime=a.created_at.to_rfc3339()>{ago(&a.created_at)}</time>
            {words.map(|c| view! { " " <q>{c}</q> })}
        </li>
    }
}

#[component]
fn Tasks(id: String) -> impl IntoView {
    // The task filter and page live in the URL: `/jobs/<id>?status=failed&page=3`.
    let status = UrlText::new("status");
    let page = UrlPage::new("page");
    let expanded = RwSignal::new(HashSet::<Uuid>::new());
    let tasks = fetched(
        move || {
            let query = TaskListQuery {
                status: status.get().parse().ok(),
                agent_id: None,
                limit: Some(PER_PAGE as u32),
                offset: Some(page.get() * PER_PAGE),
            };
            id.parse().ok().map(|id| (id, query))
        },
        |(id, query)| api::job_tasks(id, query),
    );
    view! {
        <section aria-labelledby="tasks">
            <h2 id="tasks">"Tasks"</h2>
            <label class="filters">
                "State "
                <select on:change=move |ev| { status.set(event_target_value(&ev)); page.set(0); }>
                    <option value="" selected=move || status.get().is_empty()>"any"</option>
                    {TaskStatus::ALL.into_iter().map(|s| view! {
                        <option value=s.as_str() selected=move || status.get() == s.as_str()>{s.as_str()}</option>
                    }).collect_view()}
                </select>
            </label>
            {show(tasks, move |p| view! {
                <div class="table-scroll" role="region" aria-label="Tasks (scrolls sideways on a narrow screen)" tabindex="0">
                <table class="tasks">
                    <thead>
                        <tr>
                            <th scope="col">"#"</th>
                            <th scope="col">"Type"</th>
                            <th scope="col">"State"</th>
                            <th scope="col">"Needs"</th>
                            <th scope="col">"Progress"</th>
                            <th scope="col">"Attempts"</th>
                            <th scope="col">"Agent"</th>
                            <th scope="col"><span class="visually-hidden">"Details"</span></th>
                        </tr>
                    </thead>
                    <tbody>
                        {p.items.clone().into_iter().map(|t| task_rows(t, expanded)).collect_view()}
                    </tbody>
                </table>
                </div>
                <Pager page=page total=p.total what="tasks"/>
                <Timeline tasks=p.items/>
            })}
        </section>
    }
}

fn task_rows(t: Task, expanded: RwSignal<HashSet<Uuid>>) -> impl IntoView {
    let id = t.id;
    let open = move || expanded.with(|e| e.contains(&id));
    let toggle = move |_| {
        expanded.update(|e| {
            if !e.remove(&id) {
                e.insert(id);
            }
        })
    };
    let detail = t.clone();
    view! {
        <tr data-task=id.to_string()>
            <td>{t.index}{t.name.clone().map(|n| view! { " " <span class="task-name">{n}</span> })}</td>
            <td>{t.task_type.as_str()}</td>
            <td><TaskBadge status=t.status/></td>
            <td class="task-needs">{needs(&t)}</td>
            <td>{format!("{}%", t.progress)}</td>
            <td>{format!("{}/{}", t.attempts, t.max_retries + 1)}</td>
            <td>{t.agent_id.map(|a| view! { <AgentName id=a name=t.agent_name.clone()/> })}</td>
            <td>
                <button type="button" class="expand" on:click=toggle aria-expanded=move || open().to_string()
                    aria-controls=format!("task-{id}")>
                    {move || if open() { "Hide" } else { "Show" }}
                </button>
            </td>
        </tr>
        <Show when=open>
            <tr class="task-detail" id=format!("task-{id}")>
                <td colspan="8">
                    <dl>
                        {(!detail.depends_on.is_empty()).then(|| view! {
                            <dt>"Depends on"</dt>
                            <dd class="task-depends">{detail.depends_on.iter().map(|d| format!("#{d}")).collect::<Vec<_>>().join(", ")}</dd>
                        })}
                        <dt>"Spec"</dt>
                        <dd><pre>{pretty(&detail.task_spec)}</pre></dd>
                        <dt>"Result"</dt>
                        <dd><pre class="task-result">{detail.result.as_ref().map(pretty).unwrap_or_else(|| "—".into())}</pre></dd>
                        <dt>"Progress"</dt>
                        <dd>{format!("{}% {}", detail.progress, detail.progress_message.clone().unwrap_or_default())}</dd>
                        <dt>"Error"</dt>
                        <dd>{detail.error.clone().unwrap_or_else(|| "—".into())}</dd>
                        <dt>"Attempts"</dt>
                        <dd>{format!("{} failed of {} allowed", detail.attempts, detail.max_retries + 1)}</dd>
                        <dt>"Deliveries"</dt>
                        <dd class="task-deliveries">{detail.deliveries}</dd>
                        <dt>"Lease expires"</dt>
                        <dd class="task-lease">{lease_text(&detail)}</dd>
                        <dt>"Available"</dt>
                        <dd class="task-available">{detail.available_at.as_ref().map(when).unwrap_or_else(|| "at once".into())}</dd>
                        <dt>"Agent"</dt>
                        <dd>{match detail.agent_id {
                            Some(a) => view! { <AgentName id=a name=detail.agent_name.clone()/> " " <code>{a.to_string()}</code> }.into_any(),
                            None => "—".into_any(),
                        }}</dd>
                    </dl>
                </td>
            </tr>
        </Show>
    }
}

/// What a task needs before an agent gets it, one line each: the capabilities it requires, its
/// exclusive key, the dependencies not yet completed, and (the server's words) the agent it
/// waits for.
fn needs(t: &Task) -> impl IntoView {
    let requires = (!t.requires.is_empty()).then(|| {
        view! {
            <span class="task-requires" data-requires=t.requires.join(",")>
                {format!("requires: {}", t.requires.join(", "))}
            </span>
        }
    });
    let key = t.key.clone().map(|k| {
        let text = format!("key: {k}");
        view! { <span class="task-key" data-key=k>{text}</span> }
    });
    let unmet = (t.unmet_dependencies > 0).then(|| {
        let n = t.unmet_dependencies;
        let text = match n {
            1 => "waits for 1 task".to_string(),
            _ => format!("waits for {n} tasks"),
        };
        view! { <span class="task-unmet" data-unmet=n.to_string()>{text}</span> }
    });
    let waiting = t.waiting_for.clone().map(|w| {
        let text = w.clone();
        view! { <span class="task-waiting" data-waiting=w>{text}</span> }
    });
    view! { {requires} {key} {unmet} {waiting} }
}

/// The page's tasks on one time axis: waiting to start (claimed → started), then running
/// (started → finished, or now), each with its durations in words.
#[component]
fn Timeline(tasks: Vec<Task>) -> impl IntoView {
    let now = chrono::Utc::now();
    let spans: Vec<_> = tasks
        .into_iter()
        .filter_map(|t| {
            let claimed = t.claimed_at?;
            let end = t.finished_at.unwrap_or(now).max(claimed);
            Some((t, claimed, end))
        })
        .collect();
    let (Some(t0), Some(t1)) = (
        spans.iter().map(|s| s.1).min(),
        spans.iter().map(|s| s.2).max(),
    ) else {
        return ().into_any();
    };
    let total = (t1 - t0).num_milliseconds().max(1) as f64;
    let pct = |t: chrono::DateTime<chrono::Utc>| (t - t0).num_milliseconds() as f64 * 100.0 / total;
    let rows = spans
        .into_iter()
        .map(|(t, claimed, end)| {
            let started = t.started_at.filter(|s| *s >= claimed).map(|s| s.min(end));
            let run_from = started.unwrap_or(end);
            let mut text = format!("claimed {}", claimed.format("%H:%M:%S"));
            if let Some(s) = started {
                text.push_str(&format!(" · started after {}", duration(s - claimed)));
            }
            let ended = match (t.finished_at, started) {
                (Some(_), Some(s)) => format!(" · {} after {}", t.status.as_str(), duration(end - s)),
                (Some(_), None) => format!(" · {} after {}", t.status.as_str(), duration(end - claimed)),
                (None, Some(s)) => format!(" · running for {}", duration(end - s)),
                (None, None) => format!(" · waiting to start for {}", duration(end - claimed)),
            };
            text.push_str(&ended);
            let status = t.status.as_str();
            view! {
                <li class="tl-row" data-task=t.id.to_string()>
                    <span class="tl-label">{format!("#{}", t.index)}</span>
                    <div class="tl-track" aria-hidden="true">
                        <div class="tl-wait" style=format!("left:{:.2}%;width:{:.2}%", pct(claimed), pct(run_from) - pct(claimed))></div>
                        <div class=format!("tl-run task-{status}") style=format!("left:{:.2}%;width:{:.2}%", pct(run_from), (pct(end) - pct(run_from)).max(0.3))></div>
                    </div>
                    <span class="tl-text">{text}</span>
                </li>
            }
        })
        .collect_view();
    view! {
        <h3 id="task-timeline">"Timeline of these tasks"</h3>
        <p class="muted tl-axis">{format!("from {} to {} ({})", t0.format("%H:%M:%S"), t1.format("%H:%M:%S"), duration(t1 - t0))}</p>
        <ol class="timeline" aria-labelledby="task-timeline">{rows}</ol>
    }
    .into_any()
}

/// `850 ms`, `3.2 s`, `4 min 12 s`, `2 h 5 min`.
fn duration(d: chrono::TimeDelta) -> String {
    let ms = d.num_milliseconds().max(0);
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// A time as people read it: the instant, and how far from now (ahead or past).
fn when(t: &chrono::DateTime<chrono::Utc>) -> String {
    let ahead = (*t - chrono::Utc::now()).num_seconds();
    let rel = if ahead > 0 {
        format!("in {ahead} s")
    } else {
        ago(t)
    };
    format!("{} ({rel})", t.format("%H:%M:%S UTC"))
}

/// When the current delivery's lease runs out, and what kind of lease it is.
fn lease_text(t: &Task) -> String {
    match (&t.lease_expires_at, t.heartbeat_secs) {
        (Some(at), Some(hb)) => format!("{} (heartbeat every {hb} s)", when(at)),
        (Some(at), None) => when(at),
        (None, _) => "—".into(),
    }
}

/// The job's git history, when the server keeps one.
#[component]
fn History(id: String) -> impl IntoView {
    let page = UrlPage::new("commits_page");
    let commits = fetched(
        move || {
            let query = CommitListQuery {
                limit: Some(PER_PAGE as u32),
                offset: Some(page.get() * PER_PAGE),
            };
            id.parse().ok().map(|id| (id, query))
        },
        |(id, query)| api::commits(id, query),
    );
    move || match commits.get() {
        Some(Ok(p)) => view! {
            <section aria-labelledby="history">
                <h2 id="history">"Git history"</h2>
                <ol class="commits">
                    {p.items.into_iter().map(|c| view! {
                        <li>
                            <code>{c.id[..8.min(c.id.len())].to_string()}</code>
                            " " {c.message.clone()} " "
                            <time datetime=c.time.to_rfc3339()>{ago(&c.time)}</time>
                            <span class="muted">{format!(" {} file(s)", c.files.len())}</span>
                        </li>
                    }).collect_view()}
                </ol>
                <Pager page=page total=p.total what="commits"/>
            </section>
        }
        .into_any(),
        // 404: git history is off on this server.
        _ => ().into_any(),
    }
}
