//! The overview's charts: tasks completed and failed per minute, the queue depth and the agents
//! online over the last hour, drawn as SVG from `GET /api/stats/series` and fetched again as
//! events arrive, so they move with the load.

use agora_shared::{StatsPoint, StatsSeries, StatsSeriesQuery};
use leptos::prelude::*;

use crate::api;
use crate::components::{fetched, show};

const W: f64 = 600.0;
const H: f64 = 120.0;
const MINUTES: u32 = 60;

/// One line of a chart: its name, CSS class and values (`None` is a gap: no sample).
struct Line {
    name: &'static str,
    class: &'static str,
    values: Vec<Option<u64>>,
}

#[component]
pub fn Charts() -> impl IntoView {
    let series = fetched(
        || {
            Some(StatsSeriesQuery {
                minutes: Some(MINUTES),
            })
        },
        api::stats_series,
    );
    view! {
        <section aria-labelledby="last-hour">
            <h2 id="last-hour">"The last hour"</h2>
            {show(series, |s: StatsSeries| {
                let pick = |f: fn(&StatsPoint) -> Option<u64>| s.points.iter().map(f).collect::<Vec<_>>();
                view! {
                    <div class="charts">
                        <Chart id="chart-throughput" title="Tasks per minute" lines=vec![
                            Line { name: "completed", class: "line-completed", values: pick(|p| Some(p.completed)) },
                            Line { name: "failed", class: "line-failed", values: pick(|p| Some(p.failed)) },
                        ]/>
                        <Chart id="chart-pending" title="Queue depth (pending tasks)" lines=vec![
                            Line { name: "pending", class: "line-pending", values: pick(|p| p.pending) },
                        ]/>
                        <Chart id="chart-agents" title="Agents online" lines=vec![
                            Line { name: "online", class: "line-agents", values: pick(|p| p.agents_online) },
                        ]/>
                    </div>
                }
            })}
        </section>
    }
}

/// A line chart: one path per line, scaled to the largest value, minutes along the bottom. It
/// says in words (its label) what it draws, and carries each line's latest
/// value and total in `data-` attributes.
#[component]
fn Chart(id: &'static str, title: &'static str, lines: Vec<Line>) -> impl IntoView {
    let n = lines.iter().map(|l| l.values.len()).max().unwrap_or(0);
    let top = lines
        .iter()
        .flat_map(|l| l.values.iter().flatten().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let x = |i: usize| {
        if n <= 1 {
            W
        } else {
            i as f64 * W / (n - 1) as f64
        }
    };
    let y = |v: u64| H - (v as f64 * H / top as f64);
    let summary = lines
        .iter()
        .map(|l| {
            let last = l.values.last().copied().flatten();
            let total: u64 = l.values.iter().flatten().sum();
            match last {
                Some(v) => format!("{}: {v} now, {total} in the hour", l.name),
                None => format!("{}: no sample", l.name),
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    let paths = lines
        .iter()
        .map(|l| {
            let mut d = String::new();
            let slot = W / n.max(1) as f64;
            for (i, v) in l.values.iter().enumerate() {
                let Some(v) = v else { continue };
                let joined = i > 0 && l.values[i - 1].is_some();
                if joined {
                    d.push_str(&format!("L{:.1},{:.1} ", x(i), y(*v)));
                } else {
                    // A point after a gap is drawn as a level stroke a minute wide, so a lone
                    // sample (the running minute on a fresh server) still shows.
                    let from = (x(i) - slot).max(0.0);
                    let to = if from == x(i) { x(i) + slot } else { x(i) };
                    d.push_str(&format!("M{from:.1},{:.1} L{to:.1},{:.1} ", y(*v), y(*v)));
                }
            }
            let last = l.values.last().copied().flatten().map(|v| v.to_string());
            let total: u64 = l.values.iter().flatten().sum();
            view! {
                <path class=l.class d=d data-line=l.name data-last=last data-total=total.to_string()></path>
            }
        })
        .collect_view();
    let legend = lines
        .iter()
        .map(|l| {
            let last = l.values.last().copied().flatten();
            let text = match last {
                Some(v) => format!("{} {v}", l.name),
                None => l.name.to_string(),
            };
            view! { <li><span class=format!("swatch {}", l.class)></span>{text}</li> }
        })
        .collect_view();
    view! {
        <figure class="chart" id=id>
            <figcaption>
                <span class="chart-title">{title}</span>
                <ul class="legend">{legend}</ul>
            </figcaption>
            <svg viewBox=format!("0 0 {W} {H}") preserveAspectRatio="none" role="img"
                aria-label=format!("{title}: {summary}")>
                <line class="axis" x1="0" y1=H.to_string() x2=W.to_string() y2=H.to_string()></line>
                {paths}
            </svg>
            <div class="chart-scale" aria-hidden="true">
                <span>{format!("{n} min ago")}</span>
                <span>{format!("max {top}")}</span>
                <span>"now"</span>
            </div>
        </figure>
    }
}
