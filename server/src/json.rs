//! JSON from clients (request bodies, WebSocket frames) into typed values, with errors that name
//! the field at fault. The HTTP extractors and the WebSocket hub both read through here.

use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Parses JSON, telling syntax errors (400 MALFORMED_JSON) from shape errors (400
/// VALIDATION_ERROR with the field's path).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Most bodies and frames are well formed: they are read once, without tracking the path
    // (which cost every WebSocket frame a fifth more); a bad one is read again to say where.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(shape_error)?;
    de.end()
        .map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    Ok(value)
}

/// Reads an already parsed JSON value (an MCP tool's arguments) into `T`, with the same
/// errors naming the field.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(shape_error)
}

fn shape_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    match inner.classify() {
        serde_json::error::Category::Data => {
            let message = inner.to_string();
            ApiError::validation(&field_of(&path, &message), strip_position(&message))
        }
        _ => ApiError::MalformedJson(inner.to_string()),
    }
}

/// The field a serde message is about: the path, or the name inside "missing field `x`".
pub(crate) fn field_of(path: &str, message: &str) -> String {
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split('`').next());
    match (path, named) {
        (".", Some(name)) => name.to_string(),
        (p, Some(name)) if p == name || p.ends_with(&format!(".{name}")) => p.to_string(),
        (p, Some(name)) => format!("{p}.{name}"),
        (".", None) => "body".to_string(),
        (p, None) => p.to_string(),
    }
}

fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// A fingerprint of a value's content (SHA-256 of its JSON with every object's keys sorted), so
/// that two bodies that differ only in key order match.
pub fn digest<T: serde::Serialize>(value: &T) -> Result<String, ApiError> {
    use sha2::{Digest, Sha256};
    let value = serde_json::to_value(value).map_err(|e| ApiError::Internal(e.into()))?;
    let canonical =
        serde_json::to_string(&sorted(value)).map_err(|e| ApiError::Internal(e.into()))?;
    Ok(hex::encode(Sha256::digest(canonical.as_bytes())))
}

fn sorted(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

#[cfg(test)]
mod digest_tests {
    use serde_json::json;

    #[test]
    fn key_order_does_not_change_the_digest_but_content_does() {
        let a = super::digest(&json!({"a": 1, "b": {"x": [1, {"p": 1, "q": 2}], "y": 2}})).unwrap();
        let b = super::digest(&json!({"b": {"y": 2, "x": [1, {"q": 2, "p": 1}]}, "a": 1})).unwrap();
        let c = super::digest(&json!({"a": 1, "b": {"x": [{"p": 1, "q": 2}, 1], "y": 2}})).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
