//! The Python-compatible scheme: byte for byte what the reference Python client derives, and
//! only where that is correct.

use std::io::Write as _;
use std::process::{Command, Stdio};

use super::*;
use crate::key::python::write_python_compat;

#[test]
fn python_compat_scheme_falls_back_where_it_would_be_wrong() {
    let policy = DefaultKeyPolicy::python_compat();
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let k = |path, namespace, body: &Value| {
        key_at(&policy, path, UPSTREAM, namespace, body).expect("cacheable")
    };
    assert_eq!(k(PATH, None, &body).scheme(), KeyScheme::PythonCompat);
    assert_eq!(
        k("chat/completions", None, &body).scheme(),
        KeyScheme::PythonCompat
    );
    assert_eq!(
        k(PATH, None, &with(body.clone(), "stream", json!(true))),
        k(PATH, None, &body)
    );
    assert_eq!(
        k(PATH, Some("tenant"), &body).scheme(),
        KeyScheme::Canonical
    );
    assert_eq!(
        k("/v1/messages", None, &body).scheme(),
        KeyScheme::Canonical
    );
    assert_eq!(
        k(PATH, None, &with(body.clone(), "tools", json!([]))).scheme(),
        KeyScheme::Canonical
    );
    assert_eq!(
        k(PATH, None, &json!({"model": "m", "prompt": "x"})).scheme(),
        KeyScheme::Canonical
    );
    assert_eq!(
        k(PATH, None, &json!({"model": "m:x", "messages": []})).model(),
        "m:x"
    );
    assert_ne!(k(PATH, None, &body), key(&body));
}

/// `_generate_cache_key` of the reference Python client, verbatim, driven over JSON lines on
/// stdin.
const REFERENCE_PY: &str = r#"
import hashlib, json, sys

def _generate_cache_key(model, messages, temperature, max_tokens):
    content = json.dumps({
        "model": model,
        "messages": messages,
        "temperature": temperature,
        "max_tokens": max_tokens
    }, sort_keys=True)
    hash_obj = hashlib.sha256(content.encode())
    return f"holysheep:cache:{model}:{hash_obj.hexdigest()[:32]}", content

for line in sys.stdin:
    req = json.loads(line)
    key, content = _generate_cache_key(
        req["model"], req["messages"], req.get("temperature", 0.7), req.get("max_tokens", 1000))
    print(json.dumps([key, content]))
"#;

fn requests() -> Vec<Value> {
    let mut requests = vec![
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}),
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}], "temperature": 0.7, "max_tokens": 1000}),
        json!({"model": "deepseek-chat", "messages": [{"role": "user", "content": "สวัสดีครับ ช่วยสรุปบทความนี้ให้หน่อย 🙏😀"}], "temperature": 1.0}),
        json!({"model": "claude-sonnet-4.5", "messages": [
            {"role": "system", "content": "quote \" backslash \\ tab \t nl \n cr \r bs \u{8} ff \u{c} nul \u{0} us \u{1f} del \u{7f} nbsp \u{a0} ls \u{2028} bmp-end \u{ffff} private \u{e000} astral 𝄞 \u{10ffff}"},
            {"role": "user", "content": [
                {"type": "text", "text": "describe"},
                {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}
            ]}
        ], "temperature": 0, "max_tokens": 0}),
        json!({"model": "m", "messages": [{"role": "user", "content": "x", "z": 1, "a": {"é": 1, "z": 2, "a": 3, "😀": 4, "ｚ": 5, "": 6}}], "temperature": null}),
        json!({"model": "m", "messages": [], "temperature": 2, "max_tokens": 9223372036854775807_i64}),
        json!({"model": "m", "messages": [[], {}, [[]], true, false, null, -1, 18446744073709551615_u64, -9223372036854775808_i64]}),
        json!({"model": "gpt-4o:ft:org", "messages": [{"role": "user", "content": "model with colons"}], "stream": true}),
    ];
    let floats = [
        0.7,
        1.0,
        1e-05,
        1e16,
        1e15,
        1e+16,
        0.0,
        -0.0,
        1.5,
        0.1 + 0.2,
        123_456_789.123,
        9_999_999_999_999_998.0,
        0.0001,
        0.000_123,
        1e22,
        1e-7,
        2.5e-7,
        100.0,
        -273.15,
        f64::MAX,
        f64::MIN_POSITIVE,
        5e-324,
        1e308,
        1234567890123456.7,
        12345678901234567.0,
        0.001,
        std::f64::consts::PI,
    ];
    requests.push(json!({"model": "m", "messages": [{"role": "user", "content": "floats", "v": floats.to_vec()}], "temperature": 0.2, "max_tokens": 1e3}));
    // Pseudo-random bit patterns cover exponents and digit counts the list above misses.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut random = Vec::new();
    while random.len() < 300 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let f = f64::from_bits(state);
        if f.is_finite() {
            random.push(f);
        }
    }
    for chunk in random.chunks(50) {
        requests.push(json!({"model": "m", "messages": [{"role": "user", "content": chunk.to_vec()}], "temperature": chunk[0]}));
    }
    requests
}

#[test]
fn python_compat_scheme_is_byte_identical_to_the_reference_client() {
    let requests = requests();
    let mut child = match Command::new("python3")
        .arg("-c")
        .arg(REFERENCE_PY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!(
            "this test needs `python3` on PATH to run the reference client's _generate_cache_key: {e}"
        ),
    };
    let mut input = String::new();
    for req in &requests {
        input.push_str(&serde_json::to_string(req).expect("serialise"));
        input.push('\n');
    }
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write to python3");
    let out = child.wait_with_output().expect("python3 output");
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout)
        .expect("utf-8")
        .lines()
        .collect();
    assert_eq!(lines.len(), requests.len());

    let policy = DefaultKeyPolicy::python_compat();
    for (req, line) in requests.iter().zip(lines) {
        let (py_key, py_content): (String, String) =
            serde_json::from_str(line).expect("python line");
        let body = req.as_object().expect("object");
        let model = body["model"].as_str().expect("model");
        let mut text = TextSink::default();
        assert!(write_python_compat::<_, Value>(&mut text, &(), body, model).is_ok());
        assert_eq!(
            String::from_utf8(text.0).expect("utf-8"),
            py_content,
            "hashed text of {req}"
        );
        let k = key_of(&policy, req).expect("cacheable");
        assert_eq!(k.scheme(), KeyScheme::PythonCompat);
        assert_eq!(k.as_str(), py_key, "key of {req}");
    }
}
