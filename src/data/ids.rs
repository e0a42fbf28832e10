//! How ids are spelled in every file that names a sample (annotations, `score` files).

/// The id rule's spelling, shared by every reader of ids (annotations, `score` files): a JSON
/// string as is, or an integer as its decimal digits (some MIMIC files number their ids);
/// anything else (float, bool, list, null) is not an id.
pub fn id_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_strings_or_integers() {
        use serde_json::json;
        assert_eq!(id_text(&json!("CXR1")), Some("CXR1".into()));
        assert_eq!(id_text(&json!(50414267)), Some("50414267".into()));
        for bad in [
            json!(1.5),
            json!(true),
            json!(null),
            json!([1]),
            json!({"a": 1}),
        ] {
            assert_eq!(id_text(&bad), None, "{bad}");
        }
    }
}
