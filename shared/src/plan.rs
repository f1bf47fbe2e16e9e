//! Validation of a plan task's result: `{"task_specs": [entry, ...]}`. An entry is the task's
//! spec itself (any JSON value but `null`), or an object with a `spec` key (`specification` is
//! accepted as an alias) and control fields:
//!
//! - `name`: unique within the plan; dependencies and `inputs` use it;
//! - `depends_on`: names or 0-based positions of entries that must complete first;
//! - `requires`: capabilities an agent must have all of to get the task;
//! - `key`: an exclusive key: at most one task per key is claimed or running at a time (across
//!   all jobs; `KEY_LIMITS` may allow more for a key);
//! - `timeout_secs`, `max_retries`: instead of the plan task's own.
//!
//! The entries become the job's work tasks, in order, after the plan task. Everything is checked
//! before anything is written: a bad entry names itself and its field, a cycle lists its members.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// Most work tasks one plan may create.
pub const MAX_PLAN_TASKS: usize = 100_000;
/// Longest task name.
pub const MAX_TASK_NAME: usize = 200;
/// Most capabilities a task may require.
pub const MAX_REQUIRES: usize = crate::agent::MAX_CAPABILITIES;
/// Longest exclusive key.
pub const MAX_KEY_LEN: usize = 500;
/// Most dependencies of one task.
pub const MAX_DEPENDS_ON: usize = 1000;
/// Most dependencies in one plan, all entries together (each costs a row, and a write when its
/// task completes or fails).
pub const MAX_PLAN_DEPENDENCIES: usize = 200_000;
/// Longest timeout a plan may give a task (a week).
pub const MAX_TASK_TIMEOUT_SECS: u64 = 7 * 86_400;
/// Most retries a plan may give a task.
pub const MAX_TASK_RETRIES: u32 = 100;

/// The control fields an entry may carry beside its spec.
pub const CONTROL_FIELDS: [&str; 6] = [
    "name",
    "depends_on",
    "requires",
    "key",
    "timeout_secs",
    "max_retries",
];

/// Why a plan result was refused (HTTP 422, the plan task stays running).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the plan task's result must be a JSON object with a 'task_specs' array")]
    NotAnObject,
    #[error("result.task_specs is missing: a plan task must return {{\"task_specs\": [...]}}")]
    Missing,
    #[error("result.task_specs must be an array, got {0}")]
    NotAnArray(&'static str),
    #[error("result.task_specs[{0}] is null: each task spec must be a JSON value")]
    NullSpec(usize),
    #[error("result.task_specs has {0} entries; at most {MAX_PLAN_TASKS} are allowed")]
    TooMany(usize),
    #[error("result.task_specs has {0} dependencies in all; at most {MAX_PLAN_DEPENDENCIES} are allowed")]
    TooManyDependencies(usize),
    /// One entry's field breaks a rule.
    #[error("result.task_specs[{entry}].{field}: {message}")]
    Entry {
        entry: usize,
        field: String,
        message: String,
    },
    /// Dependencies that wait for each other, as entry labels in order (the first repeated at
    /// the end).
    #[error("result.task_specs has a dependency cycle (each waits for the next): {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

impl PlanError {
    fn entry(entry: usize, field: &str, message: impl Into<String>) -> Self {
        PlanError::Entry {
            entry,
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// The request field it names, for the error body's `field`.
    pub fn field(&self) -> Option<String> {
        match self {
            PlanError::NullSpec(i) => Some(format!("result.task_specs[{i}]")),
            PlanError::Entry { entry, field, .. } => {
                Some(format!("result.task_specs[{entry}].{field}"))
            }
            PlanError::NotAnObject => None,
            _ => Some("result.task_specs".into()),
        }
    }
}

/// One entry of a plan, checked: what becomes a work task.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTask {
    /// The task's spec (the entry itself in the plain form).
    pub spec: Value,
    pub name: Option<String>,
    /// Positions (0-based, within the plan) of the entries it waits for: sorted, no repeats.
    pub depends_on: Vec<usize>,
    /// Capabilities an agent needs all of: sorted, no repeats.
    pub requires: Vec<String>,
    pub key: Option<String>,
    pub timeout_secs: Option<u64>,
    pub max_retries: Option<u32>,
}

impl PlannedTask {
    fn plain(spec: Value) -> Self {
        PlannedTask {
            spec,
            name: None,
            depends_on: Vec::new(),
            requires: Vec::new(),
            key: None,
            timeout_secs: None,
            max_retries: None,
        }
    }
}

/// How a task is named (its `name`, in `inputs` and in messages): the name the plan gave it, or
/// its 0-based position in the plan (names are never numbers, so the two cannot clash).
pub fn task_label(name: Option<&str>, position: usize) -> String {
    name.map(str::to_string)
        .unwrap_or_else(|| position.to_string())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The entries of a plan result, checked, or why the result is not a plan.
pub fn parse_plan(result: &Value) -> Result<Vec<PlannedTask>, PlanError> {
    let obj = result.as_object().ok_or(PlanError::NotAnObject)?;
    let specs = obj.get("task_specs").ok_or(PlanError::Missing)?;
    let specs = specs
        .as_array()
        .ok_or_else(|| PlanError::NotAnArray(kind(specs)))?;
    if specs.len() > MAX_PLAN_TASKS {
        return Err(PlanError::TooMany(specs.len()));
    }
    // The raw references first (names are known only once every entry is read).
    let mut tasks = Vec::with_capacity(specs.len());
    let mut refs = Vec::with_capacity(specs.len());
    for (i, entry) in specs.iter().enumerate() {
        let (task, deps) = parse_entry(i, entry)?;
        tasks.push(task);
        refs.push(deps);
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, t) in tasks.iter().enumerate() {
        if let Some(name) = t.name.as_deref() {
            if let Some(first) = names.insert(name, i) {
                return Err(PlanError::entry(
                    i,
                    "name",
                    format!("'{name}' is already the name of task_specs[{first}]"),
                ));
            }
        }
    }
    let mut resolved = Vec::with_capacity(tasks.len());
    for (i, deps) in refs.into_iter().enumerate() {
        let mut out = Vec::with_capacity(deps.len());
        for (j, d) in deps.into_iter().enumerate() {
            let field = format!("depends_on[{j}]");
            let pos = match d {
                Ref::Name(n) => *names.get(n.as_str()).ok_or_else(|| {
                    PlanError::entry(i, &field, format!("no entry is named '{n}'"))
                })?,
                Ref::Position(p) if p < tasks.len() => p,
                Ref::Position(p) => {
                    return Err(PlanError::entry(
                        i,
                        &field,
                        format!(
                            "position {p} is past the plan's last entry ({})",
                            tasks.len().saturating_sub(1)
                        ),
                    ))
                }
            };
            if pos == i {
                return Err(PlanError::entry(
                    i,
                    &field,
                    "a task cannot depend on itself",
                ));
            }
            out.push(pos);
        }
        out.sort_unstable();
        out.dedup();
        resolved.push(out);
    }
    let edges: usize = resolved.iter().map(Vec::len).sum();
    if edges > MAX_PLAN_DEPENDENCIES {
        return Err(PlanError::TooManyDependencies(edges));
    }
    for (t, deps) in tasks.iter_mut().zip(resolved) {
        t.depends_on = deps;
    }
    if let Some(cycle) = find_cycle(&tasks) {
        let labels = cycle
            .iter()
            .map(|&i| match tasks[i].name.as_deref() {
                Some(n) => format!("{n} (task_specs[{i}])"),
                None => format!("task_specs[{i}]"),
            })
            .collect();
        return Err(PlanError::Cycle(labels));
    }
    Ok(tasks)
}

/// A dependency as written: a name or a position.
enum Ref {
    Name(String),
    Position(usize),
}

fn parse_entry(i: usize, entry: &Value) -> Result<(PlannedTask, Vec<Ref>), PlanError> {
    let obj = match entry {
        Value::Null => return Err(PlanError::NullSpec(i)),
        Value::Object(o) if o.contains_key("spec") || o.contains_key("specification") => o,
        other => return Ok((PlannedTask::plain(other.clone()), Vec::new())),
    };
    control_entry(i, obj)
}

fn control_entry(i: usize, obj: &Map<String, Value>) -> Result<(PlannedTask, Vec<Ref>), PlanError> {
    if obj.contains_key("spec") && obj.contains_key("specification") {
        return Err(PlanError::entry(
            i,
            "specification",
            "give the spec once, as 'spec' or as 'specification'",
        ));
    }
    if let Some(unknown) = obj.keys().find(|k| {
        !matches!(k.as_str(), "spec" | "specification") && !CONTROL_FIELDS.contains(&k.as_str())
    }) {
        return Err(PlanError::entry(
            i,
            unknown,
            format!(
                "is not a control field (an entry with 'spec' takes {}); put the task's own fields inside 'spec'",
                CONTROL_FIELDS.join(", ")
            ),
        ));
    }
    let (spec_field, spec) = match obj.get("spec") {
        Some(s) => ("spec", s),
        None => (
            "specification",
            obj.get("specification").unwrap_or(&Value::Null),
        ),
    };
    if spec.is_null() {
        return Err(PlanError::entry(
            i,
            spec_field,
            "must be a JSON value, not null",
        ));
    }
    let mut task = PlannedTask::plain(spec.clone());
    let err = |field: &str, message: String| PlanError::entry(i, field, message);
    if let Some(v) = present(obj, "name") {
        let name = v
            .as_str()
            .ok_or_else(|| err("name", format!("must be a string, got {}", kind(v))))?;
        crate::validate::text("name", name, MAX_TASK_NAME).map_err(|e| err("name", e.message))?;
        if name.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err(
                "name",
                format!("'{name}' is a number: unnamed entries are known by their positions, so a name must not be one"),
            ));
        }
        task.name = Some(name.to_string());
    }
    let mut deps = Vec::new();
    if let Some(v) = present(obj, "depends_on") {
        let list = v.as_array().ok_or_else(|| {
            err(
                "depends_on",
                format!("must be an array of names or positions, got {}", kind(v)),
            )
        })?;
        if list.len() > MAX_DEPENDS_ON {
            return Err(err(
                "depends_on",
                format!(
                    "has {} entries; at most {MAX_DEPENDS_ON} are allowed",
                    list.len()
                ),
            ));
        }
        for (j, d) in list.iter().enumerate() {
            let field = format!("depends_on[{j}]");
            deps.push(match d {
                Value::String(s) => Ref::Name(s.clone()),
                Value::Number(n) => Ref::Position(
                    n.as_u64()
                        .and_then(|p| usize::try_from(p).ok())
                        .ok_or_else(|| {
                            err(
                                &field,
                                format!("must be a name or a 0-based position, got {n}"),
                            )
                        })?,
                ),
                other => {
                    return Err(err(
                        &field,
                        format!("must be a name or a 0-based position, got {}", kind(other)),
                    ))
                }
            });
        }
    }
    if let Some(v) = present(obj, "requires") {
        let list = v.as_array().ok_or_else(|| {
            err(
                "requires",
                format!("must be an array of capability strings, got {}", kind(v)),
            )
        })?;
        if list.len() > MAX_REQUIRES {
            return Err(err(
                "requires",
                format!(
                    "has {} entries; at most {MAX_REQUIRES} are allowed",
                    list.len()
                ),
            ));
        }
        for (j, c) in list.iter().enumerate() {
            let field = format!("requires[{j}]");
            let c = c
                .as_str()
                .ok_or_else(|| err(&field, format!("must be a string, got {}", kind(c))))?;
            crate::validate::text(&field, c, crate::agent::MAX_CAPABILITY_LEN)
                .map_err(|e| err(&field, e.message))?;
            task.requires.push(c.to_string());
        }
        task.requires.sort();
        task.requires.dedup();
    }
    if let Some(v) = present(obj, "key") {
        let key = v
            .as_str()
            .ok_or_else(|| err("key", format!("must be a string, got {}", kind(v))))?;
        crate::validate::text("key", key, MAX_KEY_LEN).map_err(|e| err("key", e.message))?;
        task.key = Some(key.to_string());
    }
    if let Some(v) = present(obj, "timeout_secs") {
        let t = v
            .as_u64()
            .filter(|t| (1..=MAX_TASK_TIMEOUT_SECS).contains(t))
            .ok_or_else(|| {
                err(
                    "timeout_secs",
                    format!("must be a whole number from 1 to {MAX_TASK_TIMEOUT_SECS}, got {v}"),
                )
            })?;
        task.timeout_secs = Some(t);
    }
    if let Some(v) = present(obj, "max_retries") {
        let r = v
            .as_u64()
            .and_then(|r| u32::try_from(r).ok())
            .filter(|r| *r <= MAX_TASK_RETRIES)
            .ok_or_else(|| {
                err(
                    "max_retries",
                    format!("must be a whole number from 0 to {MAX_TASK_RETRIES}, got {v}"),
                )
            })?;
        task.max_retries = Some(r);
    }
    Ok((task, deps))
}

/// A control field that is there and not `null` (`null` means "not given").
fn present<'a>(obj: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    obj.get(field).filter(|v| !v.is_null())
}

/// A cycle among the entries' dependencies, as positions with the first repeated at the end.
fn find_cycle(tasks: &[PlannedTask]) -> Option<Vec<usize>> {
    // Iterative depth-first search: 0 unseen, 1 on the current path, 2 done.
    let mut state = vec![0u8; tasks.len()];
    for start in 0..tasks.len() {
        if state[start] != 0 {
            continue;
        }
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            if let Some(&dep) = tasks[node].depends_on.get(*next) {
                *next += 1;
                match state[dep] {
                    0 => {
                        state[dep] = 1;
                        path.push((dep, 0));
                    }
                    1 => {
                        let from = path.iter().position(|&(n, _)| n == dep).unwrap_or(0);
                        let mut cycle: Vec<usize> = path[from..].iter().map(|&(n, _)| n).collect();
                        cycle.push(dep);
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                state[node] = 2;
                path.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(plan: Value) -> PlanError {
        parse_plan(&json!({ "task_specs": plan })).unwrap_err()
    }

    #[test]
    fn accepts_arrays_of_values() {
        let r = json!({"task_specs": [{"a": 1}, "b", 3]});
        let tasks = parse_plan(&r).unwrap();
        assert_eq!(tasks.len(), 3);
        assert_eq!(tasks[0], PlannedTask::plain(json!({"a": 1})));
        assert_eq!(parse_plan(&json!({"task_specs": []})).unwrap().len(), 0);
        assert_eq!(
            parse_plan(&json!({"task_specs": [], "notes": "x"}))
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn rejects_malformed_plans() {
        assert_eq!(parse_plan(&json!(null)), Err(PlanError::NotAnObject));
        assert_eq!(parse_plan(&json!([1])), Err(PlanError::NotAnObject));
        assert_eq!(parse_plan(&json!({})), Err(PlanError::Missing));
        assert_eq!(
            parse_plan(&json!({"task_specs": "x"})),
            Err(PlanError::NotAnArray("a string"))
        );
        assert_eq!(
            parse_plan(&json!({"task_specs": {"a": 1}})),
            Err(PlanError::NotAnArray("an object"))
        );
        assert_eq!(
            parse_plan(&json!({"task_specs": [1, null]})),
            Err(PlanError::NullSpec(1))
        );
        let many = Value::Array(vec![json!(1); MAX_PLAN_TASKS + 1]);
        assert_eq!(
            parse_plan(&json!({"task_specs": many})),
            Err(PlanError::TooMany(MAX_PLAN_TASKS + 1))
        );
    }

    #[test]
    fn control_fields_are_read_and_dependencies_resolved_to_positions() {
        let plan = json!({"task_specs": [
            {"spec": {"do": "ast"}, "name": "a", "requires": ["rust", "git", "rust"], "key": "src/ast.rs"},
            {"specification": "pass", "name": "b", "depends_on": ["a"], "timeout_secs": 60, "max_retries": 0},
            {"spec": "pass", "depends_on": [0, "a"]},
            {"spec": {"x": 1}, "name": null, "depends_on": ["b", 2]},
        ]});
        let t = parse_plan(&plan).unwrap();
        assert_eq!(t[0].name.as_deref(), Some("a"));
        assert_eq!(t[0].requires, vec!["git", "rust"]);
        assert_eq!(t[0].key.as_deref(), Some("src/ast.rs"));
        assert_eq!(t[1].spec, json!("pass"));
        assert_eq!((t[1].timeout_secs, t[1].max_retries), (Some(60), Some(0)));
        assert_eq!(t[1].depends_on, vec![0]);
        assert_eq!(t[2].depends_on, vec![0]);
        assert_eq!(t[3].depends_on, vec![1, 2]);
        assert_eq!(t[3].name, None);
        assert_eq!(task_label(None, 3), "3");
        // An object without `spec` is a plain spec, control-looking fields and all.
        let plain = parse_plan(&json!({"task_specs": [{"name": "x", "depends_on": [5]}]})).unwrap();
        assert_eq!(plain[0].spec, json!({"name": "x", "depends_on": [5]}));
        assert!(plain[0].depends_on.is_empty());
    }

    #[test]
    fn bad_references_and_names_name_the_entry_and_field() {
        let e = err(json!([{"spec": 1, "name": "a"}, {"spec": 2, "depends_on": ["zz"]}]));
        assert_eq!(
            e.field().as_deref(),
            Some("result.task_specs[1].depends_on[0]")
        );
        assert!(e.to_string().contains("no entry is named 'zz'"), "{e}");
        let e = err(json!([{"spec": 1, "depends_on": [7]}]));
        assert!(
            e.to_string()
                .contains("task_specs[0].depends_on[0]: position 7"),
            "{e}"
        );
        let e = err(json!([{"spec": 1, "depends_on": [0]}]));
        assert!(e.to_string().contains("cannot depend on itself"), "{e}");
        let e = err(json!([{"spec": 1, "name": "a"}, 2, {"spec": 3, "name": "a"}]));
        assert_eq!(e.field().as_deref(), Some("result.task_specs[2].name"));
        assert!(
            e.to_string().contains("already the name of task_specs[0]"),
            "{e}"
        );
        let e = err(json!([{"spec": 1, "files": ["x"]}]));
        assert_eq!(e.field().as_deref(), Some("result.task_specs[0].files"));
        for (bad, field) in [
            (json!({"spec": 1, "name": 5}), "name"),
            (json!({"spec": 1, "name": " "}), "name"),
            (json!({"spec": 1, "name": "12"}), "name"),
            (json!({"spec": 1, "depends_on": "a"}), "depends_on"),
            (json!({"spec": 1, "depends_on": [-1]}), "depends_on[0]"),
            (json!({"spec": 1, "depends_on": [true]}), "depends_on[0]"),
            (json!({"spec": 1, "requires": "rust"}), "requires"),
            (json!({"spec": 1, "requires": ["rust", 3]}), "requires[1]"),
            (json!({"spec": 1, "key": ["k"]}), "key"),
            (json!({"spec": 1, "timeout_secs": 0}), "timeout_secs"),
            (json!({"spec": 1, "timeout_secs": "60"}), "timeout_secs"),
            (json!({"spec": 1, "max_retries": 101}), "max_retries"),
            (json!({"spec": null}), "spec"),
            (json!({"spec": 1, "specification": 2}), "specification"),
        ] {
            let e = err(json!([bad]));
            assert_eq!(
                e.field(),
                Some(format!("result.task_specs[0].{field}")),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_cycle_is_refused_listing_its_members() {
        let e = err(json!([
            {"spec": 0, "name": "start"},
            {"spec": 1, "name": "a", "depends_on": ["start", "c"]},
            {"spec": 2, "name": "b", "depends_on": ["a"]},
            {"spec": 3, "name": "c", "depends_on": ["b"]},
        ]));
        let PlanError::Cycle(members) = &e else {
            panic!("{e:?}")
        };
        assert_eq!(
            members,
            &[
                "a (task_specs[1])",
                "c (task_specs[3])",
                "b (task_specs[2])",
                "a (task_specs[1])"
            ]
        );
        assert!(
            e.to_string()
                .contains("a (task_specs[1]) -> c (task_specs[3])"),
            "{e}"
        );
        // A diamond is no cycle.
        let diamond = json!({"task_specs": [
            {"spec": 0, "name": "a"},
            {"spec": 1, "name": "b", "depends_on": ["a"]},
            {"spec": 2, "name": "c", "depends_on": ["a"]},
            {"spec": 3, "name": "d", "depends_on": ["b", "c"]},
        ]});
        assert!(parse_plan(&diamond).is_ok());
        // Dependencies are counted over the whole plan.
        let dense: Vec<Value> = (0..1000)
            .map(|i| json!({"spec": i, "depends_on": (0..i.min(400)).collect::<Vec<_>>()}))
            .collect();
        assert!(matches!(
            parse_plan(&json!({ "task_specs": dense })),
            Err(PlanError::TooManyDependencies(n)) if n > MAX_PLAN_DEPENDENCIES / 2
        ));
        // A long chain is checked without recursion.
        let chain: Vec<Value> = (0..50_000)
            .map(|i| {
                if i == 0 {
                    json!({"spec": i})
                } else {
                    json!({"spec": i, "depends_on": [i - 1]})
                }
            })
            .collect();
        assert!(parse_plan(&json!({ "task_specs": chain })).is_ok());
    }
}
