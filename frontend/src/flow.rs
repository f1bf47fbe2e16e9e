//! The job lifecycle drawn as a flow chart: the seven states of the happy path in a row,
//! `failed` beneath them with a dashed edge from every state that can fail, and the plan
//! review's loop above them (`ready → accepted` when reviewers reject a plan). Passed states are
//! filled, the current one highlighted.

use agora_shared::{JobEvent, JobStatus};
use leptos::prelude::*;

/// The happy path: every state in lifecycle order but the last, `failed` (shared's lifecycle
/// tests hold `JobStatus::ALL` to that order).
const PATH: &[JobStatus] = match JobStatus::ALL.split_last() {
    Some((_failed, path)) => path,
    None => &[],
};
const W: i32 = 112;
const BOX_W: i32 = 96;
const BOX_H: i32 = 34;
const ROW: i32 = 34;
const FAIL_ROW: i32 = 130;

/// Whether a job in `from` can fail: the lifecycle's own rule (a cancel reaches `failed` from
/// every state that is not terminal).
fn can_fail(from: JobStatus) -> bool {
    from.transition(JobEvent::Cancelled) == Ok(JobStatus::Failed)
}

/// The loops back along the row that the lifecycle allows: `(from, to)` (a rejected plan sends
/// a `ready` job back to `accepted`).
fn loops() -> Vec<(JobStatus, JobStatus)> {
    let rejected = JobEvent::PlanRejected { replan: true };
    PATH.iter()
        .filter_map(|from| {
            let to = from.transition(rejected).ok()?;
            PATH.contains(&to).then_some((*from, to))
        })
        .collect()
}

/// `failed_from`: the state the job failed in, when it failed and that is known.
#[component]
pub fn FlowChart(status: JobStatus, failed_from: Option<JobStatus>) -> impl IntoView {
    let reached = |s: JobStatus| -> bool {
        let at = PATH.iter().position(|p| *p == status);
        let here = PATH.iter().position(|p| *p == s);
        match (at, here, failed_from) {
            (Some(a), Some(h), _) => h <= a,
            (None, Some(h), Some(from)) => {
                PATH.iter().position(|p| *p == from).is_some_and(|f| h <= f)
            }
            _ => false,
        }
    };
    let width = W * PATH.len() as i32;
    let fail_x = W * 3 + (W - BOX_W) / 2;
    let node = move |s: JobStatus, x: i32, y: i32| {
        let class = if s == status {
            "node current"
        } else if reached(s) {
            "node passed"
        } else {
            "node"
        };
        let failed = if s == JobStatus::Failed { " fail" } else { "" };
        view! {
            <g class=format!("{class}{failed}") data-state=s.as_str()>
                <rect x=x y=y width=BOX_W height=BOX_H rx="8"></rect>
                <text x=x + BOX_W / 2 y=y + BOX_H / 2 + 5 text-anchor="middle">{s.as_str()}</text>
            </g>
        }
    };
    let edges = (0..PATH.len() - 1)
        .map(|i| {
            let x1 = W * i as i32 + (W - BOX_W) / 2 + BOX_W;
            let y = ROW + BOX_H / 2;
            view! { <line class="edge" x1=x1 y1=y x2=x1 + (W - BOX_W) - 2 y2=y marker-end="url(#arrow)"></line> }
        })
        .collect_view();
    let fail_edges = PATH
        .iter()
        .enumerate()
        .filter(|(_, s)| can_fail(**s))
        .map(|(i, s)| {
            let x = W * i as i32 + W / 2;
            let taken = failed_from == Some(*s);
            view! {
                <line class=if taken { "edge fail-edge taken" } else { "edge fail-edge" }
                    x1=x y1=ROW + BOX_H x2=fail_x + BOX_W / 2 y2=FAIL_ROW - 2 marker-end="url(#arrow)"></line>
            }
        })
        .collect_view();
    let center = |s: JobStatus| {
        let i = PATH.iter().position(|p| *p == s).unwrap_or(0) as i32;
        W * i + W / 2
    };
    let loop_edges = loops()
        .into_iter()
        .map(|(from, to)| {
            let (x1, x2) = (center(from), center(to));
            view! {
                <path class="edge loop-edge" data-from=from.as_str() data-to=to.as_str()
                    d=format!("M {x1} {ROW} C {x1} 4, {x2} 4, {x2} {}", ROW - 2) marker-end="url(#arrow)"></path>
                <text class="loop-label" x=(x1 + x2) / 2 y="12" text-anchor="middle">"plan rejected"</text>
            }
        })
        .collect_view();
    let nodes = PATH
        .iter()
        .enumerate()
        .map(|(i, s)| node(*s, W * i as i32 + (W - BOX_W) / 2, ROW))
        .collect_view();
    view! {
        <svg class="flow" viewBox=format!("0 0 {width} {}", FAIL_ROW + BOX_H + 8) role="img"
            aria-label=format!("Job lifecycle, now {}", status.as_str())>
            <defs>
                <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6"
                    markerHeight="6" orient="auto-start-reverse">
                    <path d="M 0 0 L 10 5 L 0 10 z"></path>
                </marker>
            </defs>
            {edges}
            {loop_edges}
            {fail_edges}
            {nodes}
            {node(JobStatus::Failed, fail_x, FAIL_ROW)}
        </svg>
    }
}
