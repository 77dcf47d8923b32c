//! The canonical writer: its exact text, and which request changes make another key.

use proptest::prelude::*;

use super::*;
use crate::key::canonical::{canonical_str, next_special};

#[test]
fn next_special_finds_every_escapable_byte() {
    for len in 0..40 {
        for at in 0..len {
            for special in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                let mut bytes = vec![b'a'; len];
                bytes[at] = special;
                assert_eq!(
                    next_special(&bytes),
                    Some(at),
                    "{special:#x} at {at} of {len}"
                );
            }
            let mut bytes = vec![0xe0u8; len];
            bytes[at] = b' ';
            assert_eq!(next_special(&bytes), None);
        }
    }
    assert_eq!(next_special("สวัสดี 😀 ~\u{7f}".as_bytes()), None);
}

#[test]
fn canonical_form_is_exact() {
    let body = parse(
        r#"{"b": 1.0, "a": [1e0, -0.0, 0.5, 1e300, "x\n\u0001\"\\é😀"], "c": {"z": null, "y": true}}"#,
    );
    assert_eq!(
        canonical_text(&body),
        "{\"a\":[1,0,5e-1,1e300,\"x\\u000a\\u0001\\\"\\\\é😀\"],\"b\":1,\"c\":{\"y\":true,\"z\":null}}"
    );
}

#[test]
fn object_key_order_does_not_matter_at_any_depth() {
    let a = parse(
        r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],
            "response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"b":1,"a":2}}}}"#,
    );
    let b = parse(
        r#"{"response_format":{"json_schema":{"schema":{"a":2,"b":1},"name":"x"},"type":"json_schema"},
            "messages":[{"content":[{"text":"hi","type":"text"}],"role":"user"}],"model":"m"}"#,
    );
    assert_eq!(key(&a), key(&b));
}

#[test]
fn message_order_matters() {
    let a = chat();
    let mut b = chat();
    b["messages"].as_array_mut().expect("array").reverse();
    assert_ne!(key(&a), key(&b));
}

#[test]
fn number_spelling_does_not_matter() {
    let one = key(&parse(r#"{"model":"m","temperature":1}"#));
    assert_eq!(one, key(&parse(r#"{"model":"m","temperature":1.0}"#)));
    assert_eq!(one, key(&parse(r#"{"model":"m","temperature":1e0}"#)));
    assert_eq!(one, key(&parse(r#"{"model":"m","temperature":10e-1}"#)));
    assert_ne!(one, key(&parse(r#"{"model":"m","temperature":2}"#)));
    assert_eq!(
        key(&parse(r#"{"model":"m","top_p":0.7}"#)),
        key(&parse(r#"{"model":"m","top_p":0.70}"#))
    );
    assert_eq!(
        key(&parse(r#"{"model":"m","seed":0}"#)),
        key(&parse(r#"{"model":"m","seed":-0.0}"#))
    );
    assert_eq!(
        key(&parse(r#"{"model":"m","max_tokens":1000000000000000000}"#)),
        key(&parse(r#"{"model":"m","max_tokens":1e18}"#))
    );
}

#[test]
fn denied_fields_do_not_change_the_key() {
    let base = key(&chat());
    for (field, value) in [
        ("stream", json!(true)),
        ("stream_options", json!({"include_usage": true})),
        ("user", json!("user-42")),
        ("safety_identifier", json!("hash")),
        ("metadata", json!({"k": "v"})),
        ("store", json!(true)),
        ("prompt_cache_key", json!("pck")),
    ] {
        assert_eq!(
            key(&with(chat(), field, value)),
            base,
            "{field} must not change the key"
        );
    }
}

#[test]
fn answer_changing_fields_change_the_key() {
    let base = key(&chat());
    for (field, value) in [
        ("temperature", json!(0.2)),
        ("max_tokens", json!(101)),
        (
            "tools",
            json!([{"type": "function", "function": {"name": "f"}}]),
        ),
        ("tool_choice", json!("required")),
        ("response_format", json!({"type": "json_object"})),
        ("seed", json!(7)),
        ("stop", json!(["\n"])),
        ("top_p", json!(0.9)),
        ("n", json!(2)),
        ("logprobs", json!(true)),
        ("reasoning_effort", json!("high")),
        ("service_tier", json!("flex")),
        ("a_field_unknown_today", json!(1)),
        ("model", json!("gpt-4o")),
    ] {
        assert_ne!(
            key(&with(chat(), field, value)),
            base,
            "{field} must change the key"
        );
    }
}

proptest! {
    #[test]
    fn canonical_strings_match_a_naive_escaper(s in "(.|[\"\\\\\\x00-\\x1f]){0,40}") {
        let mut naive = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => naive.push_str("\\\""),
                '\\' => naive.push_str("\\\\"),
                c if u32::from(c) < 0x20 => naive.push_str(&format!("\\u{:04x}", u32::from(c))),
                c => naive.push(c),
            }
        }
        naive.push('"');
        let mut sink = TextSink::default();
        canonical_str(&mut sink, &s);
        prop_assert_eq!(String::from_utf8(sink.0).expect("utf-8"), naive);
    }
}
