//! Tests of key derivation: the policy and key type here; each writer, the parsed view and the
//! properties that tie them together in the files below.

use std::fmt;

use serde_json::{Value, json};

use super::canonical::Canonical;
use super::write::{MAX_DEPTH, Sink, write_value};
use super::*;

mod canonical;
mod parsed;
mod props;
mod python_compat;

const UPSTREAM: &str = "https://api.holysheep.ai/v1";
const PATH: &str = "/v1/chat/completions";

/// The text a writer produced, for tests that check it exactly.
#[derive(Default)]
struct TextSink(Vec<u8>);

impl Sink for TextSink {
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
}

impl fmt::Write for TextSink {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// The key of `body` under `policy`, written from the `Value`; checked against the key of the
/// tree the cache parses from the same text (except for a body nested too deep to parse).
fn key_at(
    policy: &DefaultKeyPolicy,
    path: &str,
    upstream: &str,
    namespace: Option<&str>,
    body: &Value,
) -> Option<CacheKey> {
    let value = ParsedBody::from_value(body.clone());
    let req = KeyRequest {
        path,
        upstream,
        namespace,
        body: &value,
    };
    let key = policy.key(&req);
    let text = serde_json::to_vec(body).expect("serialisable");
    if let Ok(parsed) = ParsedBody::parse(&text) {
        assert_eq!(
            policy.key(&KeyRequest {
                body: &parsed,
                ..req
            }),
            key,
            "the parsed tree and the Value key {body} alike"
        );
    }
    key
}

fn key_of(policy: &DefaultKeyPolicy, body: &Value) -> Option<CacheKey> {
    key_at(policy, PATH, UPSTREAM, None, body)
}

fn key(body: &Value) -> CacheKey {
    key_of(&DefaultKeyPolicy::new(), body).expect("cacheable")
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).expect("test JSON")
}

fn chat() -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"}
        ],
        "temperature": 0.7,
        "max_tokens": 100
    })
}

fn with(mut body: Value, field: &str, value: Value) -> Value {
    body[field] = value;
    body
}

fn canonical_text(body: &Value) -> String {
    let mut sink = TextSink::default();
    let _ = write_value::<Canonical, _, Value>(&mut sink, &(), body, 0);
    String::from_utf8(sink.0).expect("utf-8")
}

#[test]
fn key_has_the_documented_shape() {
    let k = key(&chat());
    assert_eq!(k.scheme(), KeyScheme::Canonical);
    assert_eq!(k.model(), "gpt-4o-mini");
    assert_eq!(k.hash().len(), 32);
    assert!(
        k.hash()
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(
        k.as_str(),
        format!("holysheep:cache:gpt-4o-mini:{}", k.hash())
    );
    assert_eq!(k.to_string(), k.as_str());
}

#[test]
fn deny_and_allow_fields() {
    let policy = DefaultKeyPolicy::new()
        .deny_field("seed")
        .allow_field("user");
    assert!(policy.denied_fields().any(|f| f == "seed"));
    assert!(!policy.denied_fields().any(|f| f == "user"));
    let base = key_of(&policy, &chat());
    assert_eq!(key_of(&policy, &with(chat(), "seed", json!(1))), base);
    assert_ne!(key_of(&policy, &with(chat(), "user", json!("u"))), base);
    // Denying only applies at the top level.
    let nested = json!({"model": "m", "messages": [{"role": "user", "content": "x", "seed": 1}]});
    let nested2 = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
    assert_ne!(key_of(&policy, &nested), key_of(&policy, &nested2));
    assert_eq!(
        DefaultKeyPolicy::new()
            .deny_field("x")
            .deny_field("x")
            .denied_fields()
            .filter(|f| *f == "x")
            .count(),
        1
    );
}

#[test]
fn namespace_path_and_upstream_change_the_key() {
    let body = chat();
    let policy = DefaultKeyPolicy::new();
    let k = |path, upstream, namespace| {
        key_at(&policy, path, upstream, namespace, &body).expect("cacheable")
    };
    let base = k(PATH, UPSTREAM, None);
    assert_ne!(k(PATH, UPSTREAM, Some("tenant-a")), base);
    assert_ne!(
        k(PATH, UPSTREAM, Some("tenant-a")),
        k(PATH, UPSTREAM, Some("tenant-b"))
    );
    assert_ne!(
        k(PATH, UPSTREAM, Some("")),
        base,
        "empty namespace is not no namespace"
    );
    assert_ne!(k("/v1/completions", UPSTREAM, None), base);
    assert_ne!(k(PATH, "https://api.openai.com/v1", None), base);
    assert_eq!(k(PATH, "https://api.holysheep.ai/v1/", None), base);
}

#[test]
fn framing_cannot_collide() {
    let body = chat();
    let policy = DefaultKeyPolicy::new();
    let k = |path, upstream, namespace| key_at(&policy, path, upstream, namespace, &body);
    assert_ne!(k("b/c", "u", Some("a")), k("c", "u", Some("a/b")));
    assert_ne!(
        k("/chat", "https://x/v1", None),
        k("/v1/chat", "https://x", None)
    );
    assert_ne!(k("", "u", Some("p")), k("p", "u", Some("")));
    assert_ne!(k("p", "u", None), k("", "u", Some("p")));
}

#[test]
fn model_segment_is_sanitised() {
    let k = key(&json!({"model": "ft:gpt-4o:org\n\u{1}é x"}));
    assert_eq!(k.model(), "ft_gpt-4o_org____x");
    assert_eq!(k.as_str().split(':').count(), 4);
    assert!(!k.as_str().chars().any(char::is_control));
    assert_ne!(
        k,
        key(&json!({"model": "ft_gpt-4o_org____x"})),
        "the digest covers the real model"
    );

    let long = "m".repeat(1000);
    assert_eq!(
        key(&json!({ "model": long })).model().len(),
        MAX_MODEL_SEGMENT
    );
    assert_eq!(key(&json!({"model": ""})).model(), "_");
    assert_eq!(
        key(&json!({"model": "accounts/fw/models/llama-v3p1@2+x.y_z"})).model(),
        "accounts/fw/models/llama-v3p1@2+x.y_z"
    );
}

#[test]
fn uncacheable_bodies_have_no_key() {
    let policy = DefaultKeyPolicy::new();
    for body in [
        json!(null),
        json!([1]),
        json!("x"),
        json!({}),
        json!({"model": 1}),
        json!({"messages": []}),
    ] {
        assert!(key_of(&policy, &body).is_none(), "{body}");
    }
    let mut deep = json!(1);
    for _ in 0..(MAX_DEPTH + 10) {
        deep = json!([deep]);
    }
    assert!(key_of(&policy, &json!({"model": "m", "messages": deep.clone()})).is_none());
    assert!(
        key_of(
            &DefaultKeyPolicy::python_compat(),
            &json!({"model": "m", "messages": [deep]})
        )
        .is_none()
    );
}

#[test]
fn custom_policies_read_the_parsed_body() {
    /// Keys on the model alone.
    struct ModelOnly;
    impl KeyPolicy for ModelOnly {
        fn key(&self, req: &KeyRequest<'_>) -> Option<CacheKey> {
            let model = req.body.str_at(&["model"])?;
            Some(CacheKey::new(model, true, &[7; 32], KeyScheme::Canonical))
        }
    }
    let text = br#"{"model": "m\u00e9", "messages": []}"#;
    let parsed = ParsedBody::parse(text).expect("valid JSON");
    let req = KeyRequest {
        path: PATH,
        upstream: UPSTREAM,
        namespace: None,
        body: &parsed,
    };
    let key = ModelOnly.key(&req).expect("cacheable");
    assert_eq!(
        key.as_str(),
        format!("holysheep:cache:m_:{}", "07".repeat(16))
    );
    let array = ParsedBody::parse(b"[]").expect("valid JSON");
    assert!(
        ModelOnly
            .key(&KeyRequest {
                body: &array,
                ..req
            })
            .is_none()
    );
}

#[test]
fn key_schemes_read_and_print_their_names() {
    for (text, scheme) in [
        ("canonical", KeyScheme::Canonical),
        ("CANONICAL", KeyScheme::Canonical),
        ("python-compat", KeyScheme::PythonCompat),
        ("Python-Compat", KeyScheme::PythonCompat),
    ] {
        assert_eq!(text.parse::<KeyScheme>(), Ok(scheme), "{text}");
        assert_eq!(scheme.to_string(), text.to_ascii_lowercase());
        let quoted = serde_json::to_string(text).expect("a JSON string");
        assert_eq!(
            serde_json::from_str::<KeyScheme>(&quoted).expect("a scheme"),
            scheme
        );
    }
    for bad in ["sha256", "", "python_compat", " canonical"] {
        let err = bad.parse::<KeyScheme>().expect_err(bad);
        assert_eq!(
            err.to_string(),
            format!(
                "unknown cache key scheme {bad:?}: expected one of \"canonical\", \"python-compat\""
            )
        );
        let quoted = serde_json::to_string(bad).expect("a JSON string");
        let err = serde_json::from_str::<KeyScheme>(&quoted).expect_err(bad);
        assert!(err.to_string().contains("python-compat"), "{err}");
    }
    assert!(serde_json::from_str::<KeyScheme>("1").is_err());
    assert_eq!(KeyScheme::default(), KeyScheme::Canonical);
}

/// Keys are stored, shared between processes and kept across releases: the same request must
/// keep its key. These were derived before the key module was split; a change here means every
/// stored entry is lost (and `CANONICAL_TAG` must be bumped for a canonical change).
#[test]
fn keys_are_stable() {
    let chat = r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello"}],"temperature":0.7,"max_tokens":100}"#;
    let tools = r#"{"model":"ft:gpt-4o:org","messages":[{"role":"user","content":"x\n\"q\" é 😀"}],"stream":true,"user":"u","top_p":1e-7,"n":2,"seed":-0.0,"tools":[{"type":"function","function":{"name":"f","parameters":{"b":1,"a":[1.5,2e300,18446744073709551615,-9223372036854775808]}}}]}"#;
    let embeddings = r#"{"model":"m","input":["a","b"],"dimensions":256}"#;
    let chat_path = "/v1/chat/completions";
    let embeddings_path = "/v1/embeddings";
    for (policy, body, path, namespace, expected) in [
        (
            DefaultKeyPolicy::new(),
            chat,
            chat_path,
            None,
            "gpt-4o-mini:50896f5b336fcbf9187f9292cd089718",
        ),
        (
            DefaultKeyPolicy::new(),
            chat,
            embeddings_path,
            None,
            "gpt-4o-mini:8766b38f14eda67ae3759c3959f7ace9",
        ),
        (
            DefaultKeyPolicy::new(),
            chat,
            chat_path,
            Some("tenant-a"),
            "gpt-4o-mini:cc33266fd725984593a67ec2a89e1499",
        ),
        (
            DefaultKeyPolicy::python_compat(),
            chat,
            chat_path,
            None,
            "gpt-4o-mini:88b49185681c2ca6799908d608db0fcf",
        ),
        (
            DefaultKeyPolicy::python_compat(),
            chat,
            chat_path,
            Some("tenant-a"),
            "gpt-4o-mini:cc33266fd725984593a67ec2a89e1499",
        ),
        (
            DefaultKeyPolicy::new(),
            tools,
            chat_path,
            None,
            "ft_gpt-4o_org:8637921c022253d285d25c5575e69ed2",
        ),
        (
            DefaultKeyPolicy::new(),
            tools,
            embeddings_path,
            Some("tenant-a"),
            "ft_gpt-4o_org:9bc0bb141ea011785f6cd4f9e5e7899c",
        ),
        (
            DefaultKeyPolicy::python_compat(),
            tools,
            chat_path,
            None,
            "ft_gpt-4o_org:8637921c022253d285d25c5575e69ed2",
        ),
        (
            DefaultKeyPolicy::new(),
            embeddings,
            embeddings_path,
            None,
            "m:8d14b0c84b1873db5aefd7a077f887ee",
        ),
        (
            DefaultKeyPolicy::new(),
            embeddings,
            embeddings_path,
            Some("tenant-a"),
            "m:8db0c380a6fe01307af3cc6212c47975",
        ),
    ] {
        let parsed = ParsedBody::parse(body.as_bytes()).expect("valid JSON");
        let key = policy.key(&KeyRequest {
            path,
            upstream: UPSTREAM,
            namespace,
            body: &parsed,
        });
        assert_eq!(
            key.as_ref().map(CacheKey::as_str),
            Some(format!("holysheep:cache:{expected}").as_str()),
            "{body} at {path} for {namespace:?}"
        );
    }
}

/// The key of `text` as the cache reads it.
fn key_of_text(text: &str) -> Option<CacheKey> {
    let body = ParsedBody::parse(text.as_bytes()).expect("valid JSON");
    DefaultKeyPolicy::new().key(&KeyRequest {
        path: PATH,
        upstream: UPSTREAM,
        namespace: None,
        body: &body,
    })
}

/// A body the upstream reads as something else must never share the plain body's key (issue
/// 11, item 8): serde_json's `Value` turns `{"$serde_json::private::RawValue": "<json>"}` into
/// `<json>`; the upstream does not.
#[test]
fn private_serde_json_keys_do_not_alias_the_plain_body() {
    let plain = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let plain_key = key_of_text(plain).expect("cacheable");
    let wrapped = json!({ "$serde_json::private::RawValue": plain }).to_string();
    assert_eq!(
        key_of_text(&wrapped),
        None,
        "no top-level model: not cacheable"
    );
    let nested = r#"{"model":"m","messages":[{"role":"user","content":{"$serde_json::private::RawValue":"\"hi\""}}]}"#;
    let nested_key = key_of_text(nested).expect("cacheable");
    assert_ne!(nested_key, plain_key);
}
