//! The request parser and the key writers (`holysheep_cache::ParsedBody`, `DefaultKeyPolicy`).
//!
//! Two oracles:
//!
//! - **`serde_json::Value`**: [`ParsedBody::parse`] must accept exactly what
//!   `serde_json::from_slice::<Value>` accepts and hold the same data, and every key written from
//!   the parsed tree must equal the key written from the `Value` ([`ParsedBody::from_value`]), in
//!   both schemes, for every request shape in [`REQUESTS`]. Where it does not apply: bodies with
//!   a key `serde_json` reserves (`$serde_json::private::…`), which `Value` reads specially and
//!   `ParsedBody` reads as the plain key the upstream sees (issue 11, item 8); for those the keys
//!   are compared with the `Value` `ParsedBody` holds instead.
//! - **RFC 8785 (JCS, `serde_jcs`)**: a canonical key depends only on what the body means, so
//!   the body rewritten in JCS form must get the same canonical key. Where it does not apply:
//!   - bodies with a number beyond ±2^53: JCS writes every number as an IEEE double, so such an
//!     integer changes value (the upstream sees it exact, and so does the key), and writes such a
//!     double below 10^21 as the digits of its shortest form (`1.5000000000000005e19` as
//!     `15000000000000004000`), which a JSON reader takes for an integer of another value;
//!   - [`KeyScheme::PythonCompat`]: it reproduces Python's `json.dumps`, which tells `1` from
//!     `1.0` where JCS writes both as `1`; its keys are meant to change with the spelling.

use holysheep_cache::{CacheKey, DefaultKeyPolicy, KeyPolicy, KeyRequest, KeyScheme, ParsedBody};
use serde_json::Value;

/// The request shapes each body is keyed under: `(path, namespace)`.
pub const REQUESTS: &[(&str, Option<&str>)] = &[
    ("/v1/chat/completions", None),
    ("/v1/chat/completions", Some("tenant-a")),
    ("/v1/chat/completions?api-version=1", None),
    ("/v1/embeddings", None),
];

const UPSTREAM: &str = "https://api.holysheep.ai/v1";

/// The largest integer magnitude an IEEE double holds exactly.
const EXACT_INT: u64 = 1 << 53;

/// Parses `data` as a request body and checks it against both oracles.
pub fn check(data: &[u8]) {
    let parsed = ParsedBody::parse(data);
    let literal = parsed.as_ref().ok().map(ParsedBody::to_value);
    let value = match literal {
        // `Value` would read these keys specially: the oracle is the literal reading.
        Some(literal) if has_reserved_key(&literal) => Ok(literal),
        _ => serde_json::from_slice::<Value>(data),
    };
    let (parsed, value) = match (parsed, value) {
        (Ok(parsed), Ok(value)) => (parsed, value),
        (Err(_), Err(_)) => return,
        (parsed, value) => panic!(
            "ParsedBody::parse and serde_json disagree: parse ok = {}, Value ok = {}",
            parsed.is_ok(),
            value.is_ok()
        ),
    };
    assert_eq!(parsed.to_value(), value, "ParsedBody holds other data");
    assert_eq!(parsed.is_object(), value.is_object());
    assert_eq!(parsed.str_at(&["model"]), value["model"].as_str());
    assert_eq!(
        parsed.bool_at(&["stream_options", "include_usage"]),
        value["stream_options"]["include_usage"].as_bool()
    );
    let from_value = ParsedBody::from_value(value.clone());
    let policies = [DefaultKeyPolicy::new(), DefaultKeyPolicy::python_compat()];
    for policy in &policies {
        for &(path, namespace) in REQUESTS {
            let from_tree = key(policy, path, namespace, &parsed);
            assert_eq!(
                from_tree,
                key(policy, path, namespace, &from_value),
                "tree and Value keys differ ({path}, {namespace:?})"
            );
            assert_eq!(
                from_tree.is_some(),
                value["model"].is_string(),
                "a body is keyed exactly when it is an object with a string model"
            );
            if let Some(key) = &from_tree {
                assert!(key.as_str().starts_with("holysheep:cache:"));
                assert_eq!(key.hash().len(), 32);
            }
        }
    }
    check_jcs(&parsed, &value);
}

/// The RFC 8785 oracle: the canonical key of the body equals that of its JCS form.
fn check_jcs(parsed: &ParsedBody<'_>, value: &Value) {
    if !value.is_object() || !all_numbers_exact(value) {
        return;
    }
    let jcs = serde_jcs::to_vec(value).expect("JCS writes every finite Value");
    let rewritten = ParsedBody::parse(&jcs).expect("JCS output is JSON");
    let policy = DefaultKeyPolicy::new();
    for &(path, namespace) in REQUESTS {
        let original = key(&policy, path, namespace, parsed);
        assert_eq!(
            original,
            key(&policy, path, namespace, &rewritten),
            "the canonical key changed with the JCS spelling: {}",
            String::from_utf8_lossy(&jcs)
        );
        if let Some(original) = original {
            assert_eq!(original.scheme(), KeyScheme::Canonical);
        }
    }
}

/// The key `policy` gives `body` sent to `path` for `namespace`.
fn key(
    policy: &DefaultKeyPolicy,
    path: &str,
    namespace: Option<&str>,
    body: &ParsedBody<'_>,
) -> Option<CacheKey> {
    policy.key(&KeyRequest {
        path,
        upstream: UPSTREAM,
        namespace,
        body,
    })
}

/// Whether an object in `v` has a key `serde_json`'s `Value` reads specially.
fn has_reserved_key(v: &Value) -> bool {
    match v {
        Value::Array(items) => items.iter().any(has_reserved_key),
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k.starts_with("$serde_json::private::") || has_reserved_key(v)),
        _ => false,
    }
}

/// Whether every number in `v` is within ±2^53, where JCS's spelling reads back as the same
/// number (see the module docs).
fn all_numbers_exact(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            n.as_u64().is_some_and(|u| u <= EXACT_INT)
                || n.as_i64().is_some_and(|i| i.unsigned_abs() <= EXACT_INT)
                || n.as_f64()
                    .is_some_and(|f| n.is_f64() && f.abs() <= EXACT_INT as f64)
        }
        Value::Array(items) => items.iter().all(all_numbers_exact),
        Value::Object(map) => map.values().all(all_numbers_exact),
        _ => true,
    }
}
