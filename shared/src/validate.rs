//! Field checks for request bodies, shared so that the dashboard can check a form before it is
//! sent and the server says the same thing when it is not.

/// A request field that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A non-blank string of at most `max` characters.
pub fn text(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.trim().is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    let n = value.chars().count();
    if n > max {
        return Err(FieldError::new(
            field,
            format!("is {n} characters long; at most {max} are allowed"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// An optional string of at most `max` characters (empty allowed).
pub fn optional_text(field: &str, value: Option<&str>, max: usize) -> Result<(), FieldError> {
    match value {
        Some(v) if v.chars().count() > max => Err(FieldError::new(
            field,
            format!("is longer than {max} characters"),
        )),
        _ => Ok(()),
    }
}

/// A number within `lo..=hi`.
pub fn range<T: PartialOrd + std::fmt::Display>(
    field: &str,
    value: T,
    lo: T,
    hi: T,
) -> Result<(), FieldError> {
    if value < lo || value > hi {
        return Err(FieldError::new(
            field,
            format!("must be between {lo} and {hi}, got {value}"),
        ));
    }
    Ok(())
}

/// `MAX_SPEC_BYTES`: the default limit on a job spec, a task spec and a result, as compact JSON.
pub const DEFAULT_MAX_SPEC_BYTES: usize = 1 << 20;

/// A JSON field larger than the server takes (413, naming the field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} is {size} bytes of JSON; at most {max} are allowed (MAX_SPEC_BYTES): store large data elsewhere and send a reference")]
pub struct TooLarge {
    pub field: String,
    pub size: usize,
    pub max: usize,
}

/// Counts the bytes written through it.
struct Count(usize);

impl std::io::Write for Count {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The size of `value` as compact JSON, without building the text.
pub fn json_len(value: &serde_json::Value) -> usize {
    let mut n = Count(0);
    // Writing a Value into a counter cannot fail.
    let _ = serde_json::to_writer(&mut n, value);
    n.0
}

/// `value` is at most `max` bytes of compact JSON.
pub fn json_size(field: &str, value: &serde_json::Value, max: usize) -> Result<(), TooLarge> {
    let size = json_len(value);
    if size > max {
        return Err(TooLarge {
            field: field.to_string(),
            size,
            max,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_sizes_are_counted_compactly() {
        let v = serde_json::json!({"a": [1, 2, "x"]});
        assert_eq!(json_len(&v), v.to_string().len());
        assert!(json_size("job_spec", &v, 100).is_ok());
        let e = json_size("result", &v, 5).unwrap_err();
        assert_eq!((e.field.as_str(), e.max), ("result", 5));
    }

    #[test]
    fn text_rules() {
        assert!(text("name", "worker-1", 10).is_ok());
        assert_eq!(text("name", "  ", 10).unwrap_err().field, "name");
        assert!(text("name", "12345678901", 10).is_err());
        assert!(text("name", "a\u{0}b", 10).is_err());
        assert!(optional_text("comment", None, 3).is_ok());
        assert!(optional_text("comment", Some("abcd"), 3).is_err());
    }

    #[test]
    fn range_rules() {
        assert!(range("priority", 5, 0, 10).is_ok());
        let e = range("progress", 101, 0, 100).unwrap_err();
        assert_eq!(e.field, "progress");
        assert!(e.message.contains("101"));
    }
}
