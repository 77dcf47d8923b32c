//! Judging recorded answers, and turning one answer shape into the other.
//!
//! Everything here works on `serde_json::Value` so that fields this crate does not know (a new
//! delta field, `system_fingerprint`, …) pass through conversions where they can.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;
use holysheep_core::sse::{DONE_EVENT, SseParser, encode_event};
use serde::de::value::MapAccessDeserializer;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};

use crate::entry::{Entry, EntryBody};

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

/// A `T` read only from a JSON object. serde's derived structs also read an array of their
/// fields in order (`["chat.completion", [...]]`), which is no answer: the probes below take
/// only what a `Value` reading would call an object.
struct Obj<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct ObjVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjVisitor<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        de.deserialize_map(ObjVisitor(PhantomData)).map(Obj)
    }
}

#[derive(Deserialize)]
struct JsonProbe<'a> {
    #[serde(borrow)]
    object: Option<&'a str>,
    #[serde(default)]
    choices: Option<Vec<Obj<IgnoredAny>>>,
    #[serde(default)]
    data: Option<Vec<Obj<IgnoredAny>>>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

/// Whether a whole JSON answer is a well-formed completion (or embeddings list) worth storing.
pub(crate) fn valid_json(endpoint: Endpoint, body: &[u8]) -> bool {
    // From a `str`: serde_json skips an ignored field's string without checking its UTF-8 when
    // it reads bytes, and an answer that is not UTF-8 is no JSON.
    let Ok(body) = std::str::from_utf8(body) else {
        return false;
    };
    let Ok(Obj(probe)) = serde_json::from_str::<Obj<JsonProbe<'_>>>(body) else {
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

/// Whether an entry holds a good answer for `endpoint`: the check an answer passed before it was
/// stored ([`valid_json`], or a complete stream), made again on an entry read back from a store
/// others may write to. A stream entry's usage flag must also be true to its chunks.
pub(crate) fn good_entry(endpoint: Endpoint, entry: &Entry) -> bool {
    match entry.body() {
        EntryBody::Json(body) => valid_json(endpoint, body),
        EntryBody::Stream { chunks, has_usage } => {
            let mut check = SseCheck::default();
            for chunk in chunks {
                check.push(chunk);
            }
            check.complete() && check.has_usage() == *has_usage
        }
    }
}

#[derive(Deserialize)]
struct ChunkProbe {
    #[serde(default)]
    choices: Vec<Obj<ChoiceProbe>>,
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
                match serde_json::from_str::<Obj<ChunkProbe>>(&event.data) {
                    Ok(Obj(probe)) if probe.error.is_none() => {
                        if probe.choices.iter().any(|Obj(c)| c.finish_reason.is_some()) {
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
        self.done && !self.bad && self.parser.buffered() == 0 && !self.parser.saw_invalid_utf8()
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

/// Top-level fields that are the chunk sequence's own framing, never part of an answer:
/// OpenAI pads stream chunks with a random `obfuscation` string.
const STREAM_ONLY: &[&str] = &["obfuscation"];

/// The top-level fields every chunk (or the whole answer) repeats: all but `object`, `choices`
/// and `usage`, which each form writes itself, and [`STREAM_ONLY`] ones.
fn copy_common(src: &Map<String, Value>, object: &str) -> Map<String, Value> {
    let mut out = Map::new();
    for (field, value) in src {
        if !matches!(field.as_str(), "object" | "choices" | "usage")
            && !STREAM_ONLY.contains(&field.as_str())
        {
            out.insert(field.clone(), value.clone());
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

/// A choice's fields besides those each form spells its own way (`index`, `message` / `delta`
/// / `text`, `finish_reason`, `logprobs`): `content_filter_results` and the like, which the
/// stream carries on its finish chunk.
fn choice_extras(choice: &Map<String, Value>) -> impl Iterator<Item = (&String, &Value)> {
    choice.iter().filter(|(field, value)| {
        !matches!(
            field.as_str(),
            "index" | "message" | "delta" | "text" | "finish_reason" | "logprobs"
        ) && !value.is_null()
    })
}

/// A whole JSON answer as a valid chunk sequence: role chunk, content chunk(s), finish chunk,
/// usage chunk when asked for, `[DONE]`.
///
/// Nothing the answer holds is dropped: every top-level field is repeated on each chunk, a
/// choice's `logprobs` ride on its content chunk, its other fields on its finish chunk, and
/// every message field becomes a delta. `None` when the answer cannot be expressed as a stream
/// without losing something the client asked for: multi-part assistant content, or a usage
/// chunk asked for (`include_usage`) when the answer has no `usage`.
pub(crate) fn json_to_sse(
    endpoint: Endpoint,
    body: &[u8],
    include_usage: bool,
) -> Option<Vec<Bytes>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object()?;
    let choices = obj.get("choices")?.as_array()?;
    let usage = obj.get("usage").filter(|u| !u.is_null());
    if include_usage && usage.is_none() {
        return None;
    }
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
        let logprobs = choice.get("logprobs").cloned().unwrap_or(Value::Null);
        if endpoint == Endpoint::Completions {
            let text = choice.get("text").and_then(Value::as_str).unwrap_or("");
            let mut piece = Map::new();
            piece.insert("index".to_owned(), index);
            piece.insert("text".to_owned(), Value::from(text));
            piece.insert("logprobs".to_owned(), logprobs);
            piece.insert("finish_reason".to_owned(), finish);
            piece.extend(choice_extras(choice).map(|(k, v)| (k.clone(), v.clone())));
            out.push(event(&common, vec![Value::Object(piece)]));
            continue;
        }
        let message = choice.get("message")?.as_object()?;
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or("assistant");
        let piece = |delta: Value, logprobs: Option<Value>, finish: Value| {
            let mut choice = Map::new();
            choice.insert("index".to_owned(), index.clone());
            choice.insert("delta".to_owned(), delta);
            if let Some(logprobs) = logprobs {
                choice.insert("logprobs".to_owned(), logprobs);
            }
            choice.insert("finish_reason".to_owned(), finish);
            choice
        };
        // The logprobs go on the content chunk, or on the finish chunk when there is none.
        let mut logprobs = Some(logprobs).filter(|l| !l.is_null());
        out.push(event(
            &common,
            vec![Value::Object(piece(
                json!({"role": role, "content": ""}),
                None,
                Value::Null,
            ))],
        ));
        match message.get("content") {
            Some(Value::String(text)) if !text.is_empty() => {
                out.push(event(
                    &common,
                    vec![Value::Object(piece(
                        json!({"content": text}),
                        logprobs.take(),
                        Value::Null,
                    ))],
                ));
            }
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            // Multi-part assistant content has no delta form.
            Some(_) => return None,
        }
        for (field, value) in message {
            match field.as_str() {
                "role" | "content" | "tool_calls" => {}
                _ if value.is_null() => {}
                _ => out.push(event(
                    &common,
                    vec![Value::Object(piece(
                        json!({ field: value }),
                        None,
                        Value::Null,
                    ))],
                )),
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
            out.push(event(
                &common,
                vec![Value::Object(piece(
                    json!({"tool_calls": with_index}),
                    None,
                    Value::Null,
                ))],
            ));
        }
        let mut last = piece(json!({}), logprobs.take(), finish);
        last.extend(choice_extras(choice).map(|(k, v)| (k.clone(), v.clone())));
        out.push(event(&common, vec![Value::Object(last)]));
    }
    if include_usage && let Some(usage) = usage {
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
    /// Message fields besides role, content and tool calls, merged across deltas.
    message_extras: Map<String, Value>,
    tool_calls: BTreeMap<u64, Map<String, Value>>,
    finish_reason: Value,
    logprobs: Value,
    /// Choice fields besides index, delta, finish reason and logprobs.
    choice_extras: Map<String, Value>,
}

/// Merges a delta into what was assembled so far, as streams spell pieces of one value:
/// strings are appended, arrays extended, objects merged field by field; a `null` adds
/// nothing; anything else replaces.
fn merge(target: &mut Value, piece: &Value) {
    match (target, piece) {
        (_, Value::Null) => {}
        (Value::String(t), Value::String(p)) => t.push_str(p),
        (Value::Array(t), Value::Array(p)) => t.extend(p.iter().cloned()),
        (Value::Object(t), Value::Object(p)) => merge_fields(t, p),
        (t, p) => *t = p.clone(),
    }
}

fn merge_fields(target: &mut Map<String, Value>, piece: &Map<String, Value>) {
    for (field, value) in piece {
        match target.get_mut(field) {
            Some(existing) if !existing.is_null() => merge(existing, value),
            _ => {
                target.insert(field.clone(), value.clone());
            }
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
            ("index", _) | (_, Value::Null) => {}
            ("function", Value::Object(_)) => {
                let target = slot
                    .entry("function")
                    .or_insert_with(|| Value::Object(Map::new()));
                merge(target, value);
            }
            _ => {
                slot.insert(field.clone(), value.clone());
            }
        }
    }
}

/// A recorded stream assembled into one completion JSON: content deltas concatenated per choice,
/// tool call deltas merged, every other delta field merged, logprobs concatenated, the finish
/// reason, every top-level field (from the first chunk that has it), usage from the final chunk.
/// `None` when a chunk is not JSON or the endpoint has no stream form.
pub(crate) fn sse_to_json(endpoint: Endpoint, chunks: &[Bytes]) -> Option<Bytes> {
    if endpoint == Endpoint::Embeddings {
        return None;
    }
    let object = match endpoint {
        Endpoint::Chat => "chat.completion",
        _ => "text_completion",
    };
    let mut common: Option<Map<String, Value>> = None;
    let mut usage = Value::Null;
    let mut accs: BTreeMap<u64, Acc> = BTreeMap::new();
    for data in events(chunks) {
        let v: Value = serde_json::from_str(&data).ok()?;
        let obj = v.as_object()?;
        match &mut common {
            None => common = Some(copy_common(obj, object)),
            Some(common) => {
                for (field, value) in copy_common(obj, object) {
                    common.entry(field).or_insert(value);
                }
            }
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
            let Some(choice) = choice.as_object() else {
                continue;
            };
            let index = choice
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(position as u64);
            let acc = accs.entry(index).or_default();
            if let Some(f) = choice.get("finish_reason").filter(|f| !f.is_null()) {
                acc.finish_reason = f.clone();
            }
            if let Some(logprobs) = choice.get("logprobs") {
                merge(&mut acc.logprobs, logprobs);
            }
            for (field, value) in choice_extras(choice) {
                merge_fields(
                    &mut acc.choice_extras,
                    &Map::from_iter([(field.clone(), value.clone())]),
                );
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
                    ("role" | "content", _) => {}
                    ("tool_calls", Value::Array(calls)) => {
                        for (i, call) in calls.iter().enumerate() {
                            if let Some(call) = call.as_object() {
                                merge_tool_call(acc, i, call);
                            }
                        }
                    }
                    (_, Value::Null) => {}
                    _ => merge_fields(
                        &mut acc.message_extras,
                        &Map::from_iter([(field.clone(), value.clone())]),
                    ),
                }
            }
        }
    }
    let mut out = common?;
    let choices = accs
        .into_iter()
        .map(|(index, acc)| {
            let mut choice = Map::new();
            choice.insert("index".to_owned(), Value::from(index));
            if endpoint == Endpoint::Completions {
                choice.insert("text".to_owned(), Value::from(acc.content));
            } else {
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
                message.extend(acc.message_extras);
                if !acc.tool_calls.is_empty() {
                    let calls = acc.tool_calls.into_values().map(Value::Object).collect();
                    message.insert("tool_calls".to_owned(), Value::Array(calls));
                }
                choice.insert("message".to_owned(), Value::Object(message));
            }
            choice.insert("logprobs".to_owned(), acc.logprobs);
            choice.insert("finish_reason".to_owned(), acc.finish_reason);
            choice.extend(acc.choice_extras);
            Value::Object(choice)
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

    /// Issue 18, item 4: nothing the answer holds is dropped on the way through a stream and
    /// back: unknown top-level, choice and message fields, logprobs.
    #[test]
    fn every_field_survives_a_round_trip() {
        let mut original = completion();
        original["citations"] = json!(["https://example.com"]);
        original["choices"][0]["logprobs"] =
            json!({"content": [{"token": "Hello", "logprob": -0.1}], "refusal": null});
        original["choices"][0]["content_filter_results"] = json!({"hate": {"filtered": false}});
        original["choices"][0]["message"]["annotations"] = json!([{"type": "url_citation"}]);
        original["choices"][0]["message"]["refusal"] = json!("no");
        let chunks = json_to_sse(Endpoint::Chat, original.to_string().as_bytes(), true).unwrap();
        assert!(check(&chunks).complete());
        let back: Value =
            serde_json::from_slice(&sse_to_json(Endpoint::Chat, &chunks).unwrap()).unwrap();
        assert_eq!(back, original);
        assert_eq!(
            json_to_sse(Endpoint::Chat, back.to_string().as_bytes(), true).unwrap(),
            chunks,
            "and the same stream again"
        );
        // A usage chunk cannot be made from an answer without usage.
        let mut bare = original.clone();
        bare.as_object_mut().unwrap().remove("usage");
        assert!(json_to_sse(Endpoint::Chat, bare.to_string().as_bytes(), true).is_none());
        assert!(json_to_sse(Endpoint::Chat, bare.to_string().as_bytes(), false).is_some());
    }

    #[test]
    fn stream_only_fields_stay_in_the_stream() {
        let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "obfuscation": "xyz",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "a"}, "finish_reason": "stop"}]});
        let chunks = [
            encode_event(&chunk.to_string()),
            Bytes::from_static(DONE_EVENT),
        ];
        let v: Value =
            serde_json::from_slice(&sse_to_json(Endpoint::Chat, &chunks).unwrap()).unwrap();
        assert!(v.get("obfuscation").is_none());
        assert_eq!(v["choices"][0]["message"]["content"], "a");
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

    /// Found by the `convert` fuzz target: serde's derived structs also read a JSON array of
    /// their fields, so an array "answer" or "chunk" passed the checks a `Value` reading fails
    /// (and a shared store could serve it). Only objects are answers.
    #[test]
    fn arrays_are_not_answers() {
        assert!(!valid_json(
            Endpoint::Chat,
            br#"["chat.completion", [{"index": 0}], null, null]"#
        ));
        let done = Bytes::from_static(DONE_EVENT);
        for finish in [
            r#"[[{"finish_reason": "stop"}]]"#,
            r#"{"choices": [["stop"]]}"#,
        ] {
            assert!(
                !check(&[encode_event(finish), done.clone()]).complete(),
                "{finish}"
            );
        }
        let object = encode_event(r#"{"choices": [{"finish_reason": "stop"}]}"#);
        assert!(check(&[object, done]).complete());
        // Nor is a stream with bytes that are not UTF-8 (the parser would read them as U+FFFD,
        // the entry would keep them raw).
        let bad = Bytes::from_static(
            b"data: {\"choices\":[{\"finish_reason\":\"stop\",\"x\":\"\xff\"}]}\n\n",
        );
        assert!(!check(&[bad, Bytes::from_static(DONE_EVENT)]).complete());
        // A character split across two reads is fine.
        let split = "data: {\"choices\":[{\"finish_reason\":\"stop\",\"x\":\"é\"}]}\n\n".as_bytes();
        let at = split.iter().position(|&b| b >= 0x80).unwrap() + 1;
        let pieces = [
            Bytes::copy_from_slice(&split[..at]),
            Bytes::copy_from_slice(&split[at..]),
            Bytes::from_static(DONE_EVENT),
        ];
        assert!(check(&pieces).complete());
        // Nor are choices or embeddings that are not objects.
        assert!(!valid_json(
            Endpoint::Chat,
            br#"{"object": "chat.completion", "choices": [1]}"#
        ));
        assert!(!valid_json(
            Endpoint::Embeddings,
            br#"{"object": "list", "data": [[0.5]]}"#
        ));
        assert!(valid_json(
            Endpoint::Embeddings,
            br#"{"object": "list", "data": [{"embedding": [0.5]}]}"#
        ));
    }

    /// Found by the `convert` fuzz target: bytes that are not UTF-8 inside a field the check
    /// does not read passed it, so an answer no JSON reader accepts could be stored and served.
    #[test]
    fn answers_are_utf8() {
        let good = br#"{"object":"chat.completion","choices":[{"index":0}],"x":"a"}"#;
        assert!(valid_json(Endpoint::Chat, good));
        let bad = b"{\"object\":\"chat.completion\",\"choices\":[{\"index\":0}],\"x\":\"\xff\"}";
        assert!(!valid_json(Endpoint::Chat, bad));
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
