//! The parsed view reads every text exactly as `serde_json::Value` does.

use super::*;

fn same_as_value(text: &str) {
    let expected = serde_json::from_str::<Value>(text);
    let parsed = ParsedBody::parse(text.as_bytes());
    match (expected, parsed) {
        (Ok(v), Ok(p)) => assert_eq!(p.to_value(), v, "{text}"),
        (Err(_), Err(_)) => {}
        (v, p) => panic!("{text}: Value {v:?}, ParsedBody {p:?}"),
    }
}

#[test]
fn reads_like_value() {
    for text in [
        "null",
        " true ",
        "-0",
        "-0.0",
        "1e400",
        "18446744073709551616",
        "-9223372036854775809",
        "1.5e-7",
        r#""a\"b\u00e9\ud83d\ude00""#,
        r#"{"b": 1, "a": 2, "b": 3, "a": [4]}"#,
        r#"{"z": {"y": 1, "x": {"w": null, "v": "u"}}, "\u0061": 0}"#,
        r#"{"a": 1, "$serde_json::private::RawValue": "[1, 2]"}"#,
        "[1, 2,]",
        "{} x",
        "",
        r#""\ud800""#,
        &"[".repeat(200),
        &format!("{}{}", "[".repeat(127), "]".repeat(127)),
        &format!("{}{}", "[".repeat(129), "]".repeat(129)),
    ] {
        same_as_value(text);
    }
}

/// serde_json's private keys are plain keys here, as they are to the upstream: a body keyed
/// through a `Value` could otherwise hit the answer of a body the upstream never saw.
#[test]
fn private_serde_json_keys_are_read_literally() {
    let inner = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let wrapped = serde_json::json!({ "$serde_json::private::RawValue": inner }).to_string();
    let body = ParsedBody::parse(wrapped.as_bytes()).expect("valid JSON");
    assert_eq!(body.str_at(&["model"]), None, "the upstream sees no model");
    let value = body.to_value();
    assert_eq!(value["$serde_json::private::RawValue"], inner);
    for text in [
        r#"{"$serde_json::private::RawValue": 5}"#,
        r#"{"$serde_json::private::Number": "12"}"#,
        r#"{"\u0024serde_json::private::RawValue": "[1, 2]"}"#,
    ] {
        let body = ParsedBody::parse(text.as_bytes()).expect("valid JSON");
        assert!(body.is_object(), "{text}");
    }
}

#[test]
fn fields_are_read_from_the_top() {
    let body = ParsedBody::parse(
        br#"{"model": "m", "stream": true, "stream_options": {"include_usage": false}}"#,
    )
    .expect("valid JSON");
    assert!(body.is_object());
    assert_eq!(body.str_at(&["model"]), Some("m"));
    assert_eq!(body.bool_at(&["stream"]), Some(true));
    assert_eq!(
        body.bool_at(&["stream_options", "include_usage"]),
        Some(false)
    );
    assert_eq!(body.bool_at(&["model"]), None);
    assert_eq!(body.str_at(&["missing", "x"]), None);
    let array = ParsedBody::parse(b"[1]").expect("valid JSON");
    assert!(!array.is_object());
    assert_eq!(array.str_at(&["model"]), None);
}
