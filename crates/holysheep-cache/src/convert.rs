//! Judging recorded answers, and turning one answer shape into the other.
//!
//! Everything here works on `serde_json::Value` so that fields this crate does not know (a new
//! delta field, `system_fingerprint`, …) pass through conversions where they can.

use std::collections::BTreeMap;

use bytes::Bytes;
use holysheep_core::sse::{DONE_EVENT, SseParser, encode_event};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value, json};

/// Which OpenAI endpoint a cacheable request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `/chat/completions`
    Chat,
    /// `/completions` (legacy text completions)
    Completions,
    /// `/embeddings`
    Embeddings,
}

impl Endpoint {
    /// The endpoint a request path names, if it is one the cache understands.
    pub(crate) fn from_path(path: &str) -> Option<Self> {
        let path = path.trim_end_matches('/');
        if path.ends_with("/chat/completions") || path == "chat/completions" {
            Some(Self::Chat)
        } else if path.ends_with("/completions") || path == "completions" {
            Some(Self::Completions)
        } else if path.ends_with("/embeddings") || path == "embeddings" {
            Some(Self::Embeddings)
        } else {
            None
        }
    }

    fn json_object(self) -> &'static str {
        match self {
            Self::Chat => "chat.completion",
            Self::Completions => "text_completion",
            Self::Embeddings => "list",
        }
    }
}

#[derive(Deserialize)]
struct JsonProbe<'a> {
    #[serde(borrow)]
    object: Option<&'a str>,
    #[serde(default)]
    choices: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    data: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

/// Whether a whole JSON answer is a well-formed completion (or embeddings list) worth storing.
pub(crate) fn valid_json(endpoint: Endpoint, body: &[u8]) -> bool {
    let Ok(probe) = serde_json::from_slice::<JsonProbe<'_>>(body) else {
        return false;
    };
    if probe.error.is_some() || probe.object != Some(endpoint.json_object()) {
        return false;
    }
    match endpoint {
        Endpoint::Chat | Endpoint::Completions => probe.choices.is_some_and(|c| !c.is_empty()),
        Endpoint::Embeddings => probe.data.is_some_and(|d| !d.is_empty()),
    }
}

#[derive(Deserialize)]
struct ChunkProbe {
    #[serde(default)]
    choices: Vec<ChoiceProbe>,
    #[serde(default)]
    usage: Option<IgnoredAny>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct ChoiceProbe {
    #[serde(default)]
    finish_reason: Option<IgnoredAny>,
}

/// Follows a Server-Sent-Events answer as it is recorded, to tell at its end whether it is
/// complete: a chunk with a `finish_reason`, then `[DONE]`, then nothing.
#[derive(Debug, Default)]
pub(crate) struct SseCheck {
    parser: SseParser,
    saw_finish: bool,
    done: bool,
    bad: bool,
    has_usage: bool,
}

impl SseCheck {
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        if self.bad {
            return;
        }
        self.parser.push(chunk);
        while let Some(event) = self.parser.next_event() {
            if self.done {
                self.bad = true;
            } else if event.is_done() {
                if self.saw_finish {
                    self.done = true;
                } else {
                    self.bad = true;
                }
            } else {
                match serde_json::from_str::<ChunkProbe>(&event.data) {
                    Ok(probe) if probe.error.is_none() => {
                        if probe.choices.iter().any(|c| c.finish_reason.is_some()) {
                            self.saw_finish = true;
                        }
                        if probe.choices.is_empty() && probe.usage.is_some() {
                            self.has_usage = true;
                        }
                    }
                    _ => self.bad = true,
                }
            }
        }
    }

    /// Whether the stream, now ended, is complete.
    pub(crate) fn complete(&self) -> bool {
        self.done && !self.bad && self.parser.buffered() == 0
    }

    /// Whether a usage-only chunk (`stream_options.include_usage`) was seen.
    pub(crate) fn has_usage(&self) -> bool {
        self.has_usage
    }
}

fn events(chunks: &[Bytes]) -> Vec<String> {
    let mut parser = SseParser::new();
    let mut out = Vec::new();
    for chunk in chunks {
        parser.push(chunk);
        while let Some(event) = parser.next_event() {
            if event.is_done() {
                return out;
            }
            out.push(event.data);
        }
    }
    out
}

fn usage_only(chunk: &Value) -> bool {
    chunk
        .get("choices")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
        && chunk.get("usage").is_some_and(|u| !u.is_null())
}

/// The stream without its usage-only chunk, for a client that did not ask for one.
pub(crate) fn strip_usage(chunks: &[Bytes]) -> Vec<Bytes> {
    let mut out = Vec::new();
    for data in events(chunks) {
        match serde_json::from_str::<Value>(&data) {
            Ok(v) if usage_only(&v) => {}
            _ => out.push(encode_event(&data)),
        }
    }
    out.push(Bytes::from_static(DONE_EVENT));
    out
}

fn copy_common(src: &Map<String, Value>, object: &str) -> Map<String, Value> {
    let mut out = Map::new();
    for field in [
        "id",
        "created",
        "model",
        "system_fingerprint",
        "service_tier",
    ] {
        if let Some(v) = src.get(field) {
            out.insert(field.to_owned(), v.clone());
        }
    }
    out.insert("object".to_owned(), Value::from(object));
    out
}

fn event(common: &Map<String, Value>, choices: Vec<Value>) -> Bytes {
    let mut chunk = common.clone();
    chunk.insert("choices".to_owned(), Value::Array(choices));
    encode_event(&Value::Object(chunk).to_string())
}

/// A whole JSON answer as a valid chunk sequence: role chunk, content chunk(s), finish chunk,
/// usage chunk when asked for, `[DONE]`. `None` when the answer cannot be expressed as a stream.
pub(crate) fn json_to_sse(
    endpoint: Endpoint,
    body: &[u8],
    include_usage: bool,
) -> Option<Vec<Bytes>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object()?;
    let choices = obj.get("choices")?.as_array()?;
    let mut out = Vec::new();
    let common = match endpoint {
        Endpoint::Chat => copy_common(obj, "chat.completion.chunk"),
        Endpoint::Completions => copy_common(obj, "text_completion"),
        Endpoint::Embeddings => return None,
    };
    for (position, choice) in choices.iter().enumerate() {
        let choice = choice.as_object()?;
        let index = choice
            .get("index")
            .cloned()
            .unwrap_or(Value::from(position));
        let finish = choice.get("finish_reason").cloned().unwrap_or(Value::Null);
        if endpoint == Endpoint::Completions {
            let text = choice.get("text").and_then(Value::as_str).unwrap_or("");
            out.push(event(
                &common,
                vec![json!({"index": index, "text": text, "logprobs": null, "finish_reason": finish})],
            ));
            continue;
        }
        let message = choice.get("message")?.as_object()?;
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or("assistant");
        let piece = |delta: Value, finish: Value| {
            event(
                &common,
                vec![json!({"index": index, "delta": delta, "finish_reason": finish})],
            )
        };
        out.push(piece(json!({"role": role, "content": ""}), Value::Null));
        match message.get("content") {
            Some(Value::String(text)) if !text.is_empty() => {
                out.push(piece(json!({"content": text}), Value::Null));
            }
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            // Multi-part assistant content has no delta form.
            Some(_) => return None,
        }
        for (field, value) in message {
            match field.as_str() {
                "role" | "content" | "tool_calls" => {}
                _ if value.is_null() => {}
                _ => out.push(piece(json!({ field: value }), Value::Null)),
            }
        }
        if let Some(calls) = message.get("tool_calls").and_then(Value::as_array)
            && !calls.is_empty()
        {
            let mut with_index = Vec::with_capacity(calls.len());
            for (i, call) in calls.iter().enumerate() {
                let mut call = call.as_object()?.clone();
                call.insert("index".to_owned(), Value::from(i));
                with_index.push(Value::Object(call));
            }
            out.push(piece(json!({"tool_calls": with_index}), Value::Null));
        }
        out.push(piece(json!({}), finish));
    }
    if include_usage && let Some(usage) = obj.get("usage").filter(|u| !u.is_null()) {
        let mut chunk = common.clone();
        chunk.insert("choices".to_owned(), Value::Array(Vec::new()));
        chunk.insert("usage".to_owned(), usage.clone());
        out.push(encode_event(&Value::Object(chunk).to_string()));
    }
    out.push(Bytes::from_static(DONE_EVENT));
    Some(out)
}

#[derive(Default)]
struct Acc {
    role: Option<String>,
    content: String,
    has_content: bool,
    text_fields: Map<String, Value>,
    tool_calls: BTreeMap<u64, Map<String, Value>>,
    finish_reason: Value,
}

fn append_str(map: &mut Map<String, Value>, field: &str, piece: &str) {
    match map.get_mut(field) {
        Some(Value::String(s)) => s.push_str(piece),
        _ => {
            map.insert(field.to_owned(), Value::from(piece));
        }
    }
}

fn merge_tool_call(acc: &mut Acc, position: usize, delta: &Map<String, Value>) {
    let index = delta
        .get("index")
        .and_then(Value::as_u64)
        .unwrap_or(position as u64);
    let slot = acc.tool_calls.entry(index).or_default();
    for (field, value) in delta {
        match (field.as_str(), value) {
            ("index", _) => {}
            ("function", Value::Object(function)) => {
                let target = slot
                    .entry("function")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(target) = target {
                    for (name, part) in function {
                        match part {
                            Value::String(piece) => append_str(target, name, piece),
                            other => {
                                target.insert(name.clone(), other.clone());
                            }
                        }
                    }
                }
            }
            (_, Value::Null) => {}
            _ => {
                slot.insert(field.clone(), value.clone());
            }
        }
    }
}

/// A recorded stream assembled into one completion JSON: content deltas concatenated per choice,
/// tool call deltas merged, the finish reason, usage from the final chunk. `None` when a chunk is
/// not JSON or the endpoint has no stream form.
pub(crate) fn sse_to_json(endpoint: Endpoint, chunks: &[Bytes]) -> Option<Bytes> {
    if endpoint == Endpoint::Embeddings {
        return None;
    }
    let mut common: Option<Map<String, Value>> = None;
    let mut usage = Value::Null;
    let mut accs: BTreeMap<u64, Acc> = BTreeMap::new();
    for data in events(chunks) {
        let v: Value = serde_json::from_str(&data).ok()?;
        let obj = v.as_object()?;
        if common.is_none() {
            let object = match endpoint {
                Endpoint::Chat => "chat.completion",
                _ => "text_completion",
            };
            common = Some(copy_common(obj, object));
        }
        if let Some(u) = obj.get("usage").filter(|u| !u.is_null()) {
            usage = u.clone();
        }
        for (position, choice) in obj
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let index = choice
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(position as u64);
            let acc = accs.entry(index).or_default();
            if let Some(f) = choice.get("finish_reason").filter(|f| !f.is_null()) {
                acc.finish_reason = f.clone();
            }
            if endpoint == Endpoint::Completions {
                if let Some(text) = choice.get("text").and_then(Value::as_str) {
                    acc.content.push_str(text);
                }
                continue;
            }
            let Some(delta) = choice.get("delta").and_then(Value::as_object) else {
                continue;
            };
            for (field, value) in delta {
                match (field.as_str(), value) {
                    ("role", Value::String(role)) => acc.role = Some(role.clone()),
                    ("content", Value::String(piece)) => {
                        acc.content.push_str(piece);
                        // The role chunk carries `content: ""` even before tool calls.
                        acc.has_content |= !piece.is_empty();
                    }
                    ("tool_calls", Value::Array(calls)) => {
                        for (i, call) in calls.iter().enumerate() {
                            if let Some(call) = call.as_object() {
                                merge_tool_call(acc, i, call);
                            }
                        }
                    }
                    (_, Value::String(piece)) => append_str(&mut acc.text_fields, field, piece),
                    _ => {}
                }
            }
        }
    }
    let mut out = common?;
    let choices = accs
        .into_iter()
        .map(|(index, acc)| {
            if endpoint == Endpoint::Completions {
                return json!({"index": index, "text": acc.content, "logprobs": null,
                    "finish_reason": acc.finish_reason});
            }
            let mut message = Map::new();
            message.insert(
                "role".to_owned(),
                Value::from(acc.role.unwrap_or_else(|| "assistant".to_owned())),
            );
            let content = if acc.has_content || acc.tool_calls.is_empty() {
                Value::from(acc.content)
            } else {
                Value::Null
            };
            message.insert("content".to_owned(), content);
            message.extend(acc.text_fields);
            if !acc.tool_calls.is_empty() {
                let calls = acc.tool_calls.into_values().map(Value::Object).collect();
                message.insert("tool_calls".to_owned(), Value::Array(calls));
            }
            json!({"index": index, "message": message, "logprobs": null,
                "finish_reason": acc.finish_reason})
        })
        .collect();
    out.insert("choices".to_owned(), Value::Array(choices));
    if !usage.is_null() {
        out.insert("usage".to_owned(), usage);
    }
    Some(Bytes::from(Value::Object(out).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion() -> Value {
        let answer = holysheep_testkit::ChatAnswer::new("gpt-4.1", "Hello there").created(7);
        serde_json::from_slice(&answer.to_json()).unwrap()
    }

    fn check(chunks: &[Bytes]) -> SseCheck {
        let mut check = SseCheck::default();
        for c in chunks {
            check.push(c);
        }
        check
    }

    #[test]
    fn json_validation() {
        let good = completion().to_string();
        assert!(valid_json(Endpoint::Chat, good.as_bytes()));
        assert!(!valid_json(Endpoint::Embeddings, good.as_bytes()));
        assert!(!valid_json(
            Endpoint::Chat,
            b"{\"object\":\"chat.completion\",\"choices\":[]}"
        ));
        assert!(!valid_json(
            Endpoint::Chat,
            b"{\"error\":{\"message\":\"x\"}}"
        ));
        assert!(!valid_json(
            Endpoint::Chat,
            b"{\"object\":\"chat.completion\",\"choi"
        ));
        assert!(valid_json(
            Endpoint::Embeddings,
            b"{\"object\":\"list\",\"data\":[{\"embedding\":[0.1]}],\"model\":\"e\"}"
        ));
    }

    #[test]
    fn json_round_trips_through_sse() {
        let original = completion();
        let body = original.to_string();
        let chunks = json_to_sse(Endpoint::Chat, body.as_bytes(), true).unwrap();
        let c = check(&chunks);
        assert!(c.complete());
        assert!(c.has_usage());
        let back: Value =
            serde_json::from_slice(&sse_to_json(Endpoint::Chat, &chunks).unwrap()).unwrap();
        assert_eq!(back["choices"][0]["message"]["content"], "Hello there");
        assert_eq!(back["choices"][0]["message"]["role"], "assistant");
        assert_eq!(back["choices"][0]["finish_reason"], "stop");
        assert_eq!(back["usage"], original["usage"]);
        assert_eq!(back["system_fingerprint"], original["system_fingerprint"]);
        assert_eq!(back["object"], "chat.completion");
        assert!(valid_json(Endpoint::Chat, back.to_string().as_bytes()));

        let without = json_to_sse(Endpoint::Chat, body.as_bytes(), false).unwrap();
        assert!(!check(&without).has_usage());
        assert_eq!(strip_usage(&chunks), without);
    }

    #[test]
    fn tool_call_deltas_merge() {
        let chunks: Vec<Bytes> = [
            json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m",
                "choices":[{"index":0,"delta":{"role":"assistant","content":null,
                "tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get","arguments":""}}]},"finish_reason":null}]}),
            json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m",
                "choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]},"finish_reason":null}]}),
            json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m",
                "choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]},"finish_reason":"tool_calls"}]}),
        ]
        .iter()
        .map(|v| encode_event(&v.to_string()))
        .chain([Bytes::from_static(DONE_EVENT)])
        .collect();
        assert!(check(&chunks).complete());
        let v: Value =
            serde_json::from_slice(&sse_to_json(Endpoint::Chat, &chunks).unwrap()).unwrap();
        let msg = &v["choices"][0]["message"];
        assert_eq!(msg["content"], Value::Null);
        assert_eq!(msg["tool_calls"][0]["id"], "call_1");
        assert_eq!(msg["tool_calls"][0]["function"]["name"], "get");
        assert_eq!(msg["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        // And back into a stream with the calls indexed.
        let again = json_to_sse(Endpoint::Chat, v.to_string().as_bytes(), false).unwrap();
        assert!(check(&again).complete());
        let v2: Value =
            serde_json::from_slice(&sse_to_json(Endpoint::Chat, &again).unwrap()).unwrap();
        assert_eq!(v2["choices"], v["choices"]);
    }

    #[test]
    fn incomplete_streams_are_not_complete() {
        let chunk = encode_event(
            &json!({"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]})
                .to_string(),
        );
        let finish = encode_event(
            &json!({"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}).to_string(),
        );
        let done = Bytes::from_static(DONE_EVENT);
        assert!(!check(std::slice::from_ref(&chunk)).complete());
        assert!(!check(&[chunk.clone(), done.clone()]).complete());
        assert!(!check(&[chunk.clone(), finish.clone()]).complete());
        assert!(
            !check(&[
                chunk.clone(),
                finish.clone(),
                Bytes::from_static(b"data: [DO")
            ])
            .complete()
        );
        assert!(!check(&[finish.clone(), done.clone(), chunk.clone()]).complete());
        assert!(!check(&[encode_event("{\"error\":{}}"), finish.clone(), done.clone()]).complete());
        assert!(check(&[chunk, finish, done]).complete());
    }

    #[test]
    fn legacy_completions_convert() {
        let body = json!({"id":"c","object":"text_completion","created":1,"model":"m",
            "choices":[{"index":0,"text":"hi","finish_reason":"stop","logprobs":null}]});
        let chunks =
            json_to_sse(Endpoint::Completions, body.to_string().as_bytes(), false).unwrap();
        assert!(check(&chunks).complete());
        let back: Value =
            serde_json::from_slice(&sse_to_json(Endpoint::Completions, &chunks).unwrap()).unwrap();
        assert_eq!(back["choices"][0]["text"], "hi");
        assert!(valid_json(
            Endpoint::Completions,
            back.to_string().as_bytes()
        ));
    }

    #[test]
    fn endpoints_from_paths() {
        assert_eq!(
            Endpoint::from_path("/v1/chat/completions"),
            Some(Endpoint::Chat)
        );
        assert_eq!(
            Endpoint::from_path("/chat/completions/"),
            Some(Endpoint::Chat)
        );
        assert_eq!(
            Endpoint::from_path("/v1/completions"),
            Some(Endpoint::Completions)
        );
        assert_eq!(
            Endpoint::from_path("/embeddings"),
            Some(Endpoint::Embeddings)
        );
        assert_eq!(Endpoint::from_path("/v1/models"), None);
    }

    #[test]
    fn garbage_never_panics() {
        for bad in [
            &b""[..],
            b"[]",
            b"{\"choices\":7}",
            b"{\"choices\":[1]}",
            b"\xff",
        ] {
            let _ = json_to_sse(Endpoint::Chat, bad, true);
            let _ = sse_to_json(Endpoint::Chat, &[Bytes::copy_from_slice(bad)]);
            let _ = valid_json(Endpoint::Chat, bad);
        }
        let _ = sse_to_json(
            Endpoint::Chat,
            &[encode_event(
                "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":\"x\"}]}}]}",
            )],
        );
    }
}
