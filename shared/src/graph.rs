//! The task graph of a job: who may take a task (capability routing), why a pending task waits,
//! and the drawing of its dependencies (layers and the critical path) for the dashboard.

use std::collections::HashMap;

use crate::task::Task;
use crate::task_rules::TaskStatus;

/// An agent with `capabilities` may take a task that `requires` these (every one of them).
pub fn can_take(capabilities: &[String], requires: &[String]) -> bool {
    requires.iter().all(|r| capabilities.contains(r))
}

/// What a task that requires `requires` waits for when none of the online agents (their
/// capability sets) can take it: "waiting for an agent with: rust, git"; `None` when one can.
pub fn waiting_for(requires: &[String], online: &[Vec<String>]) -> Option<String> {
    if requires.is_empty() || online.iter().any(|caps| can_take(caps, requires)) {
        return None;
    }
    Some(format!(
        "waiting for an agent with: {}",
        requires.join(", ")
    ))
}

/// The column of each task in a left-to-right drawing: 0 for a task without dependencies, else
/// one more than its deepest dependency. Keyed by task index; dependencies outside `tasks` are
/// ignored.
pub fn layers(tasks: &[Task]) -> HashMap<u32, usize> {
    let by_index: HashMap<u32, &Task> = tasks.iter().map(|t| (t.index, t)).collect();
    let mut layer: HashMap<u32, usize> = HashMap::new();
    for t in tasks {
        depth(t.index, &by_index, &mut layer);
    }
    layer
}

/// Iterative, so a long chain does not overflow the stack; a cycle (never stored) counts as 0.
fn depth(start: u32, by_index: &HashMap<u32, &Task>, layer: &mut HashMap<u32, usize>) {
    let mut stack = vec![(start, false)];
    let mut on_path = std::collections::HashSet::new();
    while let Some((i, expanded)) = stack.pop() {
        if layer.contains_key(&i) {
            continue;
        }
        let deps: &[u32] = by_index
            .get(&i)
            .map(|t| t.depends_on.as_slice())
            .unwrap_or(&[]);
        if expanded {
            let d = deps
                .iter()
                .filter(|d| by_index.contains_key(d))
                .map(|d| layer.get(d).map_or(0, |l| l + 1))
                .max()
                .unwrap_or(0);
            layer.insert(i, d);
            on_path.remove(&i);
            continue;
        }
        on_path.insert(i);
        stack.push((i, true));
        for d in deps {
            if by_index.contains_key(d) && !layer.contains_key(d) && !on_path.contains(d) {
                stack.push((*d, false));
            }
        }
    }
}

/// How long a task took or has taken so far (ms), the weight of the critical path: finished
/// tasks their run, a running task its time so far, the rest 0.
fn weight(t: &Task, now: chrono::DateTime<chrono::Utc>) -> i64 {
    let Some(start) = t.started_at.or(t.claimed_at) else {
        return 0;
    };
    let end = match t.status {
        TaskStatus::Completed | TaskStatus::Failed => t.finished_at.unwrap_or(now),
        _ => now,
    };
    (end - start).num_milliseconds().max(0)
}

/// The critical path: the chain of dependencies that decides when the job can finish, as task
/// indexes from first to last. The longest chain by task count, ties broken by the time its
/// tasks took (so a finished job shows the chain that held it up).
pub fn critical_path(tasks: &[Task], now: chrono::DateTime<chrono::Utc>) -> Vec<u32> {
    let by_index: HashMap<u32, &Task> = tasks.iter().map(|t| (t.index, t)).collect();
    let layer = layers(tasks);
    let mut order: Vec<&Task> = tasks.iter().collect();
    order.sort_by_key(|t| (layer.get(&t.index).copied().unwrap_or(0), t.index));
    // Best chain ending at each task: (length, time, predecessor).
    let mut best: HashMap<u32, (usize, i64, Option<u32>)> = HashMap::new();
    for t in order {
        let mut here = (1usize, weight(t, now), None);
        for d in &t.depends_on {
            if let (Some(&(n, w, _)), true) = (best.get(d), by_index.contains_key(d)) {
                let cand = (n + 1, w + weight(t, now), Some(*d));
                if (cand.0, cand.1) > (here.0, here.1) {
                    here = cand;
                }
            }
        }
        best.insert(t.index, here);
    }
    let Some((&end, _)) = best
        .iter()
        .max_by_key(|(i, (n, w, _))| (*n, *w, std::cmp::Reverse(**i)))
    else {
        return Vec::new();
    };
    let mut path = vec![end];
    let mut at = end;
    while let Some(&(_, _, Some(prev))) = best.get(&at) {
        path.push(prev);
        at = prev;
    }
    path.reverse();
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use uuid::Uuid;

    fn task(index: u32, deps: &[u32], secs: i64) -> Task {
        let t0 = Utc.timestamp_opt(1_000, 0).unwrap();
        serde_json::from_value(serde_json::json!({
            "id": Uuid::new_v4(), "job_id": Uuid::nil(), "index": index, "type": "work",
            "task_spec": {}, "status": "completed", "attempts": 0, "max_retries": 0,
            "timeout_secs": 60, "agent_id": null, "claimed_at": t0, "started_at": t0,
            "deadline": null, "progress": 100, "progress_message": null, "result": null,
            "error": null, "created_at": t0, "updated_at": t0,
            "finished_at": t0 + chrono::Duration::seconds(secs), "depends_on": deps,
        }))
        .unwrap()
    }

    #[test]
    fn routing_needs_every_required_capability() {
        let caps = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(can_take(&caps(&["rust", "git"]), &caps(&["rust"])));
        assert!(can_take(&caps(&[]), &caps(&[])));
        assert!(!can_take(&caps(&["python"]), &caps(&["rust"])));
        assert!(!can_take(&caps(&["rust"]), &caps(&["rust", "git"])));
        let online = vec![caps(&["rust"]), caps(&["python", "git"])];
        assert_eq!(waiting_for(&caps(&["rust"]), &online), None);
        assert_eq!(waiting_for(&caps(&[]), &[]), None);
        assert_eq!(
            waiting_for(&caps(&["go", "rust"]), &online).as_deref(),
            Some("waiting for an agent with: go, rust")
        );
    }

    #[test]
    fn a_diamond_has_three_layers_and_its_slow_side_is_critical() {
        let tasks = vec![
            task(1, &[], 1),
            task(2, &[1], 50),
            task(3, &[1], 2),
            task(4, &[2, 3], 1),
            task(5, &[], 1),
        ];
        let l = layers(&tasks);
        assert_eq!((l[&1], l[&2], l[&3], l[&4], l[&5]), (0, 1, 1, 2, 0));
        let now = Utc::now();
        assert_eq!(critical_path(&tasks, now), vec![1, 2, 4]);
        assert_eq!(critical_path(&[], now), Vec::<u32>::new());
        let long: Vec<Task> = (1..20_000u32)
            .map(|i| {
                let mut t = task(i, &[], 1);
                if i > 1 {
                    t.depends_on = vec![i - 1];
                }
                t
            })
            .collect();
        assert_eq!(layers(&long)[&19_999], 19_998);
        assert_eq!(critical_path(&long, now).len(), 19_999);
    }
}
