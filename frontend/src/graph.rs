//! A job's task graph, drawn as SVG on the job page when its plan has dependencies: one node per
//! work task in columns from shared's `layers` (a task one column right of its deepest
//! dependency), an arrow from each dependency to the task that waits for it, nodes filled in
//! their state's colour (the task badges' colours), and the critical path (shared's
//! `critical_path`) drawn thicker and marked `critical`. Up to `MAX_NODES` tasks, in index order.
//!
//! For tests: the figure is `[data-graph]`, each node `g[data-node="<index>"]` with
//! `data-status` and `data-critical`, each edge `[data-edge="<from>-<to>"]` (task indexes).

use std::collections::{HashMap, HashSet};

use agora_shared::{critical_path, layers, Page, Task, TaskListQuery, TaskStatus, TaskType};
use leptos::prelude::*;

use crate::api;
use crate::components::fetched;

/// The most tasks drawn; a larger job shows its first ones (by index).
pub const MAX_NODES: usize = 500;
const NODE_W: f64 = 132.0;
const NODE_H: f64 = 30.0;
const COL_W: f64 = 200.0;
const ROW_H: f64 = 42.0;
const PAD: f64 = 8.0;
/// Characters of a name shown in a node; the whole name is in its tooltip.
const LABEL_CHARS: usize = 16;
/// Tasks of the critical path named in the summary before it is shortened.
const PATH_NAMED: usize = 12;

/// The graph of job `id` (a uuid), or nothing when no task of it has dependencies. Live: it is
/// fetched again as events arrive, until the job turns out to have work tasks and no
/// dependencies among them (a plan's tasks are created all at once, so that is final).
#[component]
pub fn TaskGraph(id: String) -> impl IntoView {
    let flat = RwSignal::new(false);
    let tasks = fetched(
        move || {
            if flat.get() {
                return None;
            }
            let query = TaskListQuery {
                status: None,
                agent_id: None,
                // The plan task (index 0) comes first in index order, then the work tasks.
                limit: Some(MAX_NODES as u32 + 1),
                offset: Some(0),
            };
            id.parse().ok().map(|id| (id, query))
        },
        |(id, query)| api::job_tasks(id, query),
    );
    Effect::new(move |_| {
        tasks.with(|t| {
            if let Some(Ok(page)) = t {
                let work = page.items.iter().filter(|t| t.task_type == TaskType::Work);
                let mut work = work.peekable();
                if work.peek().is_some() && work.all(|t| t.depends_on.is_empty()) {
                    flat.set(true);
                }
            }
        })
    });
    move || match tasks.get() {
        Some(Ok(page)) if has_dependencies(&page) => view! { <Graph page=page/> }.into_any(),
        _ => ().into_any(),
    }
}

fn has_dependencies(page: &Page<Task>) -> bool {
    page.items
        .iter()
        .any(|t| t.task_type == TaskType::Work && !t.depends_on.is_empty())
}

/// An SVG `<title>`. `view!` (leptos_macro 0.8.20) makes a `<title>` written inside `<svg>` with
/// dynamic text an HTML `<title>`, which gives the drawing neither a name nor a tooltip, so this
/// one is built by hand.
fn svg_title(text: String) -> impl IntoView {
    leptos::tachys::svg::title().child(text)
}

/// What a node shows: its name, or `#index`.
fn label(t: &Task) -> String {
    match &t.name {
        Some(n) if !n.is_empty() => n.clone(),
        _ => format!("#{}", t.index),
    }
}

/// `label` cut to what fits in a node.
fn short_label(text: &str) -> String {
    if text.chars().count() <= LABEL_CHARS {
        return text.to_string();
    }
    let mut s: String = text.chars().take(LABEL_CHARS - 1).collect();
    s.push('…');
    s
}

/// The critical path in words: `a → b → d`, its middle left out when it is long.
fn path_words(path: &[u32], names: &HashMap<u32, String>) -> String {
    let name = |i: &u32| names.get(i).cloned().unwrap_or_else(|| format!("#{i}"));
    if path.len() <= PATH_NAMED {
        return path.iter().map(name).collect::<Vec<_>>().join(" → ");
    }
    let head: Vec<String> = path[..PATH_NAMED - 2].iter().map(name).collect();
    format!(
        "{} → … → {} ({} tasks)",
        head.join(" → "),
        name(&path[path.len() - 1]),
        path.len()
    )
}

/// Where each task goes: columns from `layers`, rows within a column ordered by the mean height
/// of each task's dependencies (fewer crossing edges), then by index; short columns centred.
fn positions(tasks: &[Task]) -> (HashMap<u32, (f64, f64)>, f64, f64) {
    let layer = layers(tasks);
    let cols = layer.values().copied().max().map_or(0, |m| m + 1);
    let mut columns: Vec<Vec<&Task>> = vec![Vec::new(); cols];
    for t in tasks {
        columns[layer.get(&t.index).copied().unwrap_or(0)].push(t);
    }
    let tallest = columns.iter().map(Vec::len).max().unwrap_or(0);
    let mut at: HashMap<u32, (f64, f64)> = HashMap::new();
    for (c, column) in columns.iter_mut().enumerate() {
        let bary = |t: &Task| {
            let ys: Vec<f64> = t
                .depends_on
                .iter()
                .filter_map(|d| at.get(d).map(|p| p.1))
                .collect();
            if ys.is_empty() {
                f64::MAX
            } else {
                ys.iter().sum::<f64>() / ys.len() as f64
            }
        };
        let mut keyed: Vec<(f64, &Task)> = column.iter().map(|t| (bary(t), *t)).collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.index.cmp(&b.1.index)));
        let offset = (tallest - keyed.len()) as f64 * ROW_H / 2.0;
        let x = PAD + c as f64 * COL_W;
        for (r, (_, t)) in keyed.iter().enumerate() {
            at.insert(t.index, (x, PAD + offset + r as f64 * ROW_H));
        }
    }
    let width = 2.0 * PAD + cols.saturating_sub(1) as f64 * COL_W + NODE_W;
    let height = 2.0 * PAD + tallest.saturating_sub(1) as f64 * ROW_H + NODE_H;
    (at, width, height)
}

/// The drawing of one fetch of the job's tasks.
#[component]
fn Graph(page: Page<Task>) -> impl IntoView {
    let plans = page
        .items
        .iter()
        .filter(|t| t.task_type == TaskType::Plan)
        .count() as u64;
    let mut tasks: Vec<Task> = page
        .items
        .into_iter()
        .filter(|t| t.task_type == TaskType::Work)
        .collect();
    let all = page.total.saturating_sub(plans).max(tasks.len() as u64);
    tasks.truncate(MAX_NODES);
    let capped = all > tasks.len() as u64;

    let path = critical_path(&tasks, chrono::Utc::now());
    let on_path: HashSet<u32> = path.iter().copied().collect();
    let path_edges: HashSet<(u32, u32)> = path.windows(2).map(|w| (w[0], w[1])).collect();
    let names: HashMap<u32, String> = tasks.iter().map(|t| (t.index, label(t))).collect();
    let (at, width, height) = positions(&tasks);
    let words = path_words(&path, &names);
    let summary = format!("task graph: {} tasks, critical path {words}", tasks.len());
    // Computed here, not inside `view!`: there a `>` in an attribute closes the tag.
    let path_attr = path
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");

    let edges = tasks
        .iter()
        .flat_map(|t| t.depends_on.iter().map(move |d| (*d, t.index)))
        .filter_map(|(from, to)| {
            let (&(x1, y1), &(x2, y2)) = (at.get(&from)?, at.get(&to)?);
            let (x1, y1) = (x1 + NODE_W, y1 + NODE_H / 2.0);
            let (x2, y2) = (x2 - 2.0, y2 + NODE_H / 2.0);
            let bend = (x2 - x1) / 2.0;
            let d = format!(
                "M{x1:.1},{y1:.1} C{:.1},{y1:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}",
                x1 + bend,
                x2 - bend
            );
            let critical = path_edges.contains(&(from, to));
            let (class, marker) = match critical {
                true => ("graph-edge critical", "url(#graph-arrow-critical)"),
                false => ("graph-edge", "url(#graph-arrow)"),
            };
            Some(view! {
                <path class=class d=d marker-end=marker data-edge=format!("{from}-{to}")
                    data-critical=critical.to_string()></path>
            })
        })
        .collect_view();

    let nodes = tasks
        .iter()
        .filter_map(|t| {
            let &(x, y) = at.get(&t.index)?;
            let status = t.status.as_str();
            let critical = on_path.contains(&t.index);
            let class = match critical {
                true => format!("graph-node node-{status} critical"),
                false => format!("graph-node node-{status}"),
            };
            let name = names.get(&t.index).cloned().unwrap_or_default();
            let mut tip = format!("{name} (#{}): {status}", t.index);
            if !t.requires.is_empty() {
                tip.push_str(&format!(", requires {}", t.requires.join(", ")));
            }
            if let Some(k) = &t.key {
                tip.push_str(&format!(", key {k}"));
            }
            if let Some(w) = &t.waiting_for {
                tip.push_str(&format!(", {w}"));
            }
            if critical {
                tip.push_str(", on the critical path");
            }
            Some(view! {
                <g class=class data-node=t.index.to_string() data-status=status
                    data-critical=critical.to_string()>
                    {svg_title(tip)}
                    <rect x=format!("{x:.1}") y=format!("{y:.1}") width=NODE_W.to_string() height=NODE_H.to_string() rx="6"></rect>
                    <text x=format!("{:.1}", x + NODE_W / 2.0) y=format!("{:.1}", y + NODE_H / 2.0 + 4.0)
                        text-anchor="middle">{short_label(&name)}</text>
                </g>
            })
        })
        .collect_view();

    let key = [
        TaskStatus::Pending,
        TaskStatus::Claimed,
        TaskStatus::Running,
        TaskStatus::Completed,
        TaskStatus::Failed,
    ]
    .into_iter()
    .map(|s| {
        view! { <li><span class=format!("graph-swatch node-{}", s.as_str())></span>{s.as_str()}</li> }
    })
    .collect_view();

    view! {
        <section aria-labelledby="task-graph-title">
            <h2 id="task-graph-title">"Task graph"</h2>
            <figure class="graph-figure" data-graph="" data-tasks=tasks.len().to_string()
                data-critical-path=path_attr>
                <div class="graph-scroll" role="region" tabindex="0"
                    aria-label="Task graph (scrolls when it is large)">
                    <svg class="task-graph" width=format!("{width:.0}") height=format!("{height:.0}")
                        viewBox=format!("0 0 {width:.0} {height:.0}") role="img" aria-label=summary.clone()>
                        {svg_title(summary.clone())}
                        <defs>
                            <marker id="graph-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8"
                                markerHeight="8" markerUnits="userSpaceOnUse" orient="auto">
                                <path d="M 0 0 L 10 5 L 0 10 z"></path>
                            </marker>
                            <marker id="graph-arrow-critical" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="10"
                                markerHeight="10" markerUnits="userSpaceOnUse" orient="auto">
                                <path d="M 0 0 L 10 5 L 0 10 z"></path>
                            </marker>
                        </defs>
                        {edges}
                        {nodes}
                    </svg>
                </div>
                <figcaption>
                    <p class="graph-path">"Critical path: " {words}</p>
                    {capped.then(|| view! {
                        <p class="graph-capped muted">{format!("graph shows the first {MAX_NODES} tasks of {all}")}</p>
                    })}
                    <ul class="graph-key">
                        {key}
                        <li><span class="graph-swatch graph-critical-swatch"></span>"critical path"</li>
                    </ul>
                </figcaption>
            </figure>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(index: u32, name: &str, deps: &[u32]) -> Task {
        let t0 = "2026-01-01T00:00:00Z";
        serde_json::from_value(serde_json::json!({
            "id": uuid::Uuid::nil(), "job_id": uuid::Uuid::nil(), "index": index,
            "type": "work", "task_spec": {}, "status": "pending", "attempts": 0,
            "max_retries": 0, "timeout_secs": 60, "agent_id": null, "claimed_at": null,
            "started_at": null, "deadline": null, "progress": 0, "progress_message": null,
            "result": null, "error": null, "created_at": t0, "updated_at": t0,
            "finished_at": null, "name": name, "depends_on": deps,
        }))
        .expect("a task")
    }

    #[test]
    fn a_diamond_is_three_columns_with_its_ends_centred() {
        let tasks = vec![
            task(1, "a", &[]),
            task(2, "b", &[1]),
            task(3, "c", &[1]),
            task(4, "d", &[2, 3]),
        ];
        let (at, width, height) = positions(&tasks);
        let (a, b, c, d) = (at[&1], at[&2], at[&3], at[&4]);
        assert!(a.0 < b.0 && b.0 == c.0 && c.0 < d.0, "{at:?}");
        assert!(b.1 < c.1, "same column, index order: {at:?}");
        assert_eq!(a.1, (b.1 + c.1) / 2.0, "a lone task sits in the middle");
        assert_eq!(a.1, d.1);
        assert_eq!(width, 2.0 * PAD + 2.0 * COL_W + NODE_W);
        assert_eq!(height, 2.0 * PAD + ROW_H + NODE_H);
    }

    #[test]
    fn rows_follow_their_dependencies_to_cross_less() {
        // 3 depends on 2 (the lower of the first column), 4 on 1: 4 goes above 3.
        let tasks = vec![
            task(1, "x", &[]),
            task(2, "y", &[]),
            task(3, "z", &[2]),
            task(4, "w", &[1]),
        ];
        let (at, _, _) = positions(&tasks);
        assert!(at[&4].1 < at[&3].1, "{at:?}");
    }

    #[test]
    fn labels_and_the_path_in_words() {
        let names: HashMap<u32, String> = [(1, "a".to_string()), (2, "b".to_string())].into();
        assert_eq!(path_words(&[1, 2, 7], &names), "a → b → #7");
        let long: Vec<u32> = (1..=40).collect();
        let words = path_words(&long, &HashMap::new());
        assert!(words.starts_with("#1 → #2"), "{words}");
        assert!(words.ends_with("… → #40 (40 tasks)"), "{words}");
        assert_eq!(short_label("short"), "short");
        assert_eq!(short_label(&"x".repeat(40)).chars().count(), LABEL_CHARS);
        let mut t = task(9, "", &[]);
        assert_eq!(label(&t), "#9");
        t.name = Some("parse".into());
        assert_eq!(label(&t), "parse");
    }
}
