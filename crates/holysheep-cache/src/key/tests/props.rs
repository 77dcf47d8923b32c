//! Properties over generated JSON: the parsed tree keys exactly like a `Value`, object key order
//! never matters, no body panics, and the hasher hashes what it is given.

use proptest::prelude::*;
use sha2::{Digest, Sha256};

use super::*;

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".*".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((".*", inner), 0..8)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// Writes `v` as JSON text with every object's keys in the order `order` picks.
fn write_permuted(v: &Value, seed: &mut u64, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            for i in (1..entries.len()).rev() {
                *seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                entries.swap(i, (*seed >> 33) as usize % (i + 1));
            }
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).expect("key"));
                out.push(':');
                write_permuted(v, seed, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_permuted(item, seed, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The keys of `text` through the `Value` path and through [`ParsedBody`] must be equal, for
/// both schemes, with and without a namespace; and the two must accept the same texts.
fn assert_fast_path_matches(text: &[u8]) -> Result<(), TestCaseError> {
    let value = serde_json::from_slice::<Value>(text);
    let parsed = ParsedBody::parse(text);
    prop_assert_eq!(
        value.is_ok(),
        parsed.is_ok(),
        "acceptance of {:?}",
        String::from_utf8_lossy(text)
    );
    let (Ok(value), Ok(parsed)) = (value, parsed) else {
        return Ok(());
    };
    prop_assert_eq!(&parsed.to_value(), &value);
    let value = ParsedBody::from_value(value);
    for policy in [DefaultKeyPolicy::new(), DefaultKeyPolicy::python_compat()] {
        for namespace in [None, Some("tenant-a")] {
            let req = KeyRequest {
                path: PATH,
                upstream: UPSTREAM,
                namespace,
                body: &value,
            };
            let fast = KeyRequest {
                body: &parsed,
                ..req
            };
            prop_assert_eq!(policy.key(&req), policy.key(&fast));
        }
    }
    Ok(())
}

/// JSON text of an object whose keys may repeat, be escaped or be the ones the reference Python
/// client reads.
fn arb_object_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just(r#""model""#.to_owned()),
        Just(r#""\u006dodel""#.to_owned()),
        Just(r#""messages""#.to_owned()),
        Just(r#""temperature""#.to_owned()),
        Just(r#""max_tokens""#.to_owned()),
        Just(r#""stream""#.to_owned()),
        Just(r#""user""#.to_owned()),
        Just(r#""a\"b""#.to_owned()),
        ".*".prop_map(|k| serde_json::to_string(&k).expect("key")),
    ];
    let value = prop_oneof![
        ".*".prop_map(Value::String),
        arb_json().prop_map(|v| Value::Array(vec![v])),
        arb_json(),
    ];
    prop::collection::vec((key, value, any::<u64>()), 0..8).prop_map(|entries| {
        let mut text = String::from("{");
        for (i, (k, v, seed)) in entries.into_iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&k);
            text.push(':');
            let mut seed = seed;
            write_permuted(&v, &mut seed, &mut text);
        }
        text.push('}');
        text
    })
}

proptest! {
    #[test]
    fn hash_sink_hashes_the_concatenation(
        pieces in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..1500), 0..12),
    ) {
        let mut sink = HashSink::new();
        let mut all = Vec::new();
        for piece in &pieces {
            sink.bytes(piece);
            all.extend_from_slice(piece);
        }
        let expected: [u8; 32] = Sha256::digest(&all).into();
        prop_assert_eq!(sink.finish(), expected);
    }

    #[test]
    fn fast_path_gives_the_value_path_key_for_any_json(text in arb_object_text()) {
        assert_fast_path_matches(text.as_bytes())?;
    }

    #[test]
    fn fast_path_gives_the_value_path_key_for_chat_bodies(
        body in arb_json(),
        model in ".*",
        seed in any::<u64>(),
    ) {
        let chat = json!({"model": model, "messages": [body.clone()], "temperature": body});
        let mut text = String::new();
        let mut s = seed;
        write_permuted(&chat, &mut s, &mut text);
        assert_fast_path_matches(text.as_bytes())?;
    }

    #[test]
    fn fast_path_accepts_what_the_value_path_accepts(
        text in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            "[\\[\\]{}:,\"a-z0-9.eE+\\- \\\\]{0,40}".prop_map(String::into_bytes),
        ],
    ) {
        assert_fast_path_matches(&text)?;
    }

    #[test]
    fn arbitrary_json_never_panics(body in arb_json(), model in ".*", ns in proptest::option::of(".*")) {
        for policy in [DefaultKeyPolicy::new(), DefaultKeyPolicy::python_compat()] {
            let k = |body: &Value| key_at(&policy, PATH, UPSTREAM, ns.as_deref(), body);
            let _ = k(&body);
            let wrapped = json!({"model": model.clone(), "messages": [body.clone()], "x": body.clone()});
            prop_assert!(k(&wrapped).is_some());
            let wrapped = json!({"model": model.clone(), "messages": [body.clone()]});
            prop_assert!(k(&wrapped).is_some());
        }
    }

    #[test]
    fn permuted_object_keys_give_equal_keys(body in arb_json(), seed in any::<u64>()) {
        let original = json!({"model": "m", "messages": [body]});
        let mut text = String::new();
        let mut s = seed;
        write_permuted(&original, &mut s, &mut text);
        // Both sides are parsed from the same number literals: serde_json's default float
        // parsing is not exact, so printing and re-parsing an f64 may move it by one ulp.
        let body: Value = serde_json::from_str(&original.to_string()).expect("valid JSON");
        let permuted: Value = serde_json::from_str(&text).expect("valid JSON");
        for policy in [DefaultKeyPolicy::new(), DefaultKeyPolicy::python_compat()] {
            prop_assert_eq!(key_of(&policy, &body), key_of(&policy, &permuted));
        }
    }
}
