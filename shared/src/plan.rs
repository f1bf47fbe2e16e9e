//! Validation of a plan task's result: `{"task_specs": [spec, ...]}` where each spec is any JSON
//! value but `null`. The specs become tasks 1..=n of the job.

use serde_json::Value;

/// Most work tasks one plan may create.
pub const MAX_PLAN_TASKS: usize = 100_000;

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

/// The task specs of a plan result, or why the result is not a plan.
pub fn parse_plan(result: &Value) -> Result<&[Value], PlanError> {
    let obj = result.as_object().ok_or(PlanError::NotAnObject)?;
    let specs = obj.get("task_specs").ok_or(PlanError::Missing)?;
    let specs = specs
        .as_array()
        .ok_or_else(|| PlanError::NotAnArray(kind(specs)))?;
    if specs.len() > MAX_PLAN_TASKS {
        return Err(PlanError::TooMany(specs.len()));
    }
    if let Some(i) = specs.iter().position(Value::is_null) {
        return Err(PlanError::NullSpec(i));
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_arrays_of_values() {
        let r = json!({"task_specs": [{"a": 1}, "b", 3]});
        assert_eq!(parse_plan(&r).unwrap().len(), 3);
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
}
