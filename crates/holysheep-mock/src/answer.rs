//! The mock's answers: deterministic functions of the request, in OpenAI's shapes.
//!
//! The same model and messages always give the same text and the same token counts, so a test
//! can compare what came through a cache or a retry with what the mock would have said.

use bytes::Bytes;
use holysheep_core::chat::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage, Choice, ChunkChoice,
    Delta, Usage,
};
use holysheep_core::sse;
use serde_json::{Map, Value, json};

use crate::embedding::{EmbeddingMode, word_overlap_embedding};

/// The words answers are made of.
const WORDS: &[&str] = &[
    "pool",
    "cache",
    "sheep",
    "latency",
    "token",
    "stream",
    "keep-alive",
    "retry",
    "budget",
    "tower",
    "layer",
    "upstream",
    "gateway",
    "answer",
    "prompt",
    "model",
    "socket",
    "warm",
    "cold",
    "quick",
    "steady",
    "bounded",
    "fair",
    "cheap",
    "request",
    "response",
    "hyper",
    "tokio",
    "bytes",
    "queue",
    "permit",
    "backoff",
];

/// The `system_fingerprint` of every answer.
const FINGERPRINT: &str = "fp_holysheep_mock";

/// The `created` time the model list reports.
const MODELS_CREATED: u64 = 1_700_000_000;

/// The text the mock answers `req` with.
///
/// It depends on the model and the messages only (not on `temperature`, `stream` or any other
/// field), and is the concatenation of a streamed answer's chunks.
pub fn expected_content(req: &ChatCompletionRequest) -> String {
    let mut canon = String::new();
    for m in &req.messages {
        // Through `Value` so a message's own fields and its `extra` map are hashed alike.
        match serde_json::to_value(m) {
            Ok(v) => canonical_json(&v, &mut canon),
            Err(_) => canon.push_str(&m.role),
        }
        canon.push('\n');
    }
    let seed = fnv1a(&[req.model.as_bytes(), b"\0", canon.as_bytes()]);
    let mut rng = SplitMix64(seed);
    let words = 12 + (rng.next_u64() % 20) as usize;
    let mut out = format!("Mock answer {:08x} from {}:", seed >> 32, req.model);
    for _ in 0..words {
        out.push(' ');
        out.push_str(WORDS[(rng.next_u64() % WORDS.len() as u64) as usize]);
    }
    out.push('.');
    out
}

/// The token counts the mock reports for `req`: about four characters a token, plus OpenAI's
/// small per-message overhead for the prompt.
pub fn expected_usage(req: &ChatCompletionRequest) -> Usage {
    let prompt_tokens = 3 + req
        .messages
        .iter()
        .map(|m| 4 + tokens_of(&message_text(m)))
        .sum::<u64>();
    let completion_tokens = tokens_of(&expected_content(req));
    Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
        extra: Map::new(),
    }
}

/// One chat answer in OpenAI's shapes: a whole `chat.completion` object, or the same answer
/// as `chat.completion.chunk` Server-Sent Events.
///
/// The mock answers every chat request with [`ChatAnswer::for_request`]. Tests and benches build
/// one with any text to stand in for an upstream without starting a server:
///
/// ```
/// use holysheep_mock::ChatAnswer;
///
/// let answer = ChatAnswer::new("gpt-4.1", "Keep the pool warm.").id("chatcmpl-1");
/// let json: serde_json::Value = serde_json::from_slice(&answer.to_json()).unwrap();
/// assert_eq!(json["choices"][0]["message"]["content"], "Keep the pool warm.");
///
/// // Two content chunks, the last with `finish_reason: "stop"`, then a usage chunk.
/// let events = answer.to_events(2, true);
/// assert_eq!(events.len(), 3);
/// assert!(events[0].starts_with(b"data: {"));
/// ```
#[derive(Debug, Clone)]
pub struct ChatAnswer {
    id: String,
    created: u64,
    model: String,
    content: String,
    usage: Usage,
}

impl ChatAnswer {
    /// An answer of `content` from `model`, with the id `chatcmpl-mock`, `created` 0, and usage
    /// counted the mock's way for the answer alone (no prompt tokens).
    pub fn new(model: impl Into<String>, content: impl Into<String>) -> Self {
        let content = content.into();
        let completion_tokens = tokens_of(&content);
        Self {
            id: "chatcmpl-mock".to_owned(),
            created: 0,
            model: model.into(),
            content,
            usage: Usage {
                prompt_tokens: 0,
                completion_tokens,
                total_tokens: completion_tokens,
                extra: Map::new(),
            },
        }
    }

    /// What the mock answers `req` with: [`expected_content`] and [`expected_usage`].
    pub fn for_request(req: &ChatCompletionRequest) -> Self {
        Self::new(req.model.clone(), expected_content(req)).usage(expected_usage(req))
    }

    /// Sets the answer's `id`.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Sets the answer's `created` time, in Unix seconds.
    pub fn created(mut self, created: u64) -> Self {
        self.created = created;
        self
    }

    /// Sets the token counts the answer reports.
    pub fn usage(mut self, usage: Usage) -> Self {
        self.usage = usage;
        self
    }

    /// The whole answer, a `chat.completion` object.
    pub fn to_json(&self) -> Bytes {
        let mut extra = Map::new();
        extra.insert("system_fingerprint".into(), FINGERPRINT.into());
        let mut choice_extra = Map::new();
        choice_extra.insert("logprobs".into(), Value::Null);
        let completion = ChatCompletion {
            id: self.id.clone(),
            object: "chat.completion".into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![Choice {
                index: 0,
                message: ChatMessage {
                    role: "assistant".into(),
                    content: Some(Value::String(self.content.clone())),
                    extra: Map::new(),
                },
                finish_reason: Some("stop".into()),
                extra: choice_extra,
            }],
            usage: Some(self.usage.clone()),
            extra,
        };
        to_bytes(&completion)
    }

    /// The streamed answer as SSE events, without the final `[DONE]`: `chunks` content chunks
    /// (fewer if the text is shorter), the first with `role: "assistant"` and the last with
    /// `finish_reason: "stop"`, then a usage-only chunk when `include_usage`.
    pub fn to_events(&self, chunks: usize, include_usage: bool) -> Vec<Bytes> {
        let pieces = split_chars(&self.content, chunks.max(1));
        let last = pieces.len().saturating_sub(1);
        let mut events = Vec::with_capacity(pieces.len() + 1);
        for (i, piece) in pieces.iter().enumerate() {
            let chunk = self.chunk(
                vec![ChunkChoice {
                    index: 0,
                    delta: Delta {
                        role: (i == 0).then(|| "assistant".to_owned()),
                        content: Some((*piece).to_owned()),
                        tool_calls: None,
                        extra: Map::new(),
                    },
                    finish_reason: (i == last).then(|| "stop".to_owned()),
                    extra: Map::new(),
                }],
                None,
                include_usage,
            );
            events.push(chunk);
        }
        if include_usage {
            events.push(self.chunk(Vec::new(), Some(self.usage.clone()), include_usage));
        }
        events
    }

    fn chunk(&self, choices: Vec<ChunkChoice>, usage: Option<Usage>, include_usage: bool) -> Bytes {
        let mut extra = Map::new();
        extra.insert("system_fingerprint".into(), FINGERPRINT.into());
        if include_usage && usage.is_none() {
            // Like OpenAI: with `include_usage`, every chunk but the last says `usage: null`.
            extra.insert("usage".into(), Value::Null);
        }
        let chunk = ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
            extra,
        };
        let data = serde_json::to_string(&chunk).unwrap_or_default();
        sse::encode_event(&data)
    }
}

/// `GET /v1/models`.
pub(crate) fn models_json(models: &[String]) -> Bytes {
    let data: Vec<Value> = models.iter().map(|m| model_value(m)).collect();
    to_bytes(&json!({"object": "list", "data": data}))
}

/// `GET /v1/models/{id}`.
pub(crate) fn model_json(model: &str) -> Bytes {
    to_bytes(&model_value(model))
}

fn model_value(model: &str) -> Value {
    json!({"id": model, "object": "model", "created": MODELS_CREATED, "owned_by": "holysheep-mock"})
}

/// Why an embeddings request cannot be answered: a message and the parameter at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadParam {
    pub(crate) message: String,
    pub(crate) param: &'static str,
}

impl BadParam {
    fn new(message: impl Into<String>, param: &'static str) -> Self {
        Self {
            message: message.into(),
            param,
        }
    }
}

/// The most inputs one embeddings request may carry, as with OpenAI.
const MAX_EMBEDDING_INPUTS: usize = 2048;
/// The largest embedding dimension the mock will produce.
const MAX_EMBEDDING_DIMENSIONS: u64 = 8192;

/// `POST /v1/embeddings`: one deterministic unit vector per input, seeded from the model and
/// the input text.
pub(crate) fn embeddings_json(
    body: &Value,
    default_dimensions: usize,
    mode: EmbeddingMode,
) -> Result<Bytes, BadParam> {
    let obj = body
        .as_object()
        .ok_or_else(|| BadParam::new("The request body must be a JSON object.", "body"))?;
    let model = obj
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| BadParam::new("You must provide a model parameter.", "model"))?;
    let inputs = embedding_inputs(obj.get("input"))?;
    let dimensions = match obj.get("dimensions") {
        None | Some(Value::Null) => default_dimensions.max(1),
        Some(v) => match v.as_u64() {
            Some(d) if (1..=MAX_EMBEDDING_DIMENSIONS).contains(&d) => d as usize,
            _ => {
                return Err(BadParam::new(
                    format!("dimensions must be an integer from 1 to {MAX_EMBEDDING_DIMENSIONS}."),
                    "dimensions",
                ));
            }
        },
    };
    let base64 = match obj.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return Err(BadParam::new(
                "encoding_format must be 'float' or 'base64'.",
                "encoding_format",
            ));
        }
    };
    let mut prompt_tokens = 0;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            prompt_tokens += input.tokens;
            let vector = match mode {
                EmbeddingMode::Random => embedding_vector(model, &input.text, dimensions),
                EmbeddingMode::WordOverlap => word_overlap_embedding(&input.text, dimensions),
            };
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::String(base64_encode(&bytes))
            } else {
                Value::from(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(to_bytes(&json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    })))
}

struct EmbeddingInput {
    text: String,
    tokens: u64,
}

fn embedding_inputs(input: Option<&Value>) -> Result<Vec<EmbeddingInput>, BadParam> {
    let bad = || {
        BadParam::new(
            "input must be a string, an array of strings, an array of tokens or an array of token arrays.",
            "input",
        )
    };
    let inputs = match input {
        Some(Value::String(s)) => vec![text_input(s)],
        Some(Value::Array(items)) if !items.is_empty() => {
            if items.iter().all(Value::is_u64) {
                vec![tokens_input(items)]
            } else {
                items
                    .iter()
                    .map(|item| match item {
                        Value::String(s) => Ok(text_input(s)),
                        Value::Array(t) if !t.is_empty() && t.iter().all(Value::is_u64) => {
                            Ok(tokens_input(t))
                        }
                        _ => Err(bad()),
                    })
                    .collect::<Result<_, _>>()?
            }
        }
        _ => return Err(bad()),
    };
    if inputs.len() > MAX_EMBEDDING_INPUTS {
        return Err(BadParam::new(
            format!("input may hold at most {MAX_EMBEDDING_INPUTS} items."),
            "input",
        ));
    }
    Ok(inputs)
}

fn text_input(s: &str) -> EmbeddingInput {
    EmbeddingInput {
        text: s.to_owned(),
        tokens: tokens_of(s).max(1),
    }
}

fn tokens_input(tokens: &[Value]) -> EmbeddingInput {
    EmbeddingInput {
        text: Value::from(tokens.to_vec()).to_string(),
        tokens: tokens.len() as u64,
    }
}

/// A unit vector seeded from the model and the text.
fn embedding_vector(model: &str, text: &str, dimensions: usize) -> Vec<f32> {
    let mut rng = SplitMix64(fnv1a(&[model.as_bytes(), b"\0", text.as_bytes()]));
    let raw: Vec<f64> = (0..dimensions)
        .map(|_| (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt();
    let norm = if norm > 0.0 { norm } else { 1.0 };
    raw.iter().map(|x| (x / norm) as f32).collect()
}

/// Characters per token, roughly, for English text.
fn tokens_of(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// The text of a message: a string, or the `text` of its content parts.
fn message_text(m: &ChatMessage) -> String {
    match &m.content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// Splits `text` into at most `n` pieces of about equal length, on character boundaries.
fn split_chars(text: &str, n: usize) -> Vec<&str> {
    let chars = text.chars().count();
    if chars == 0 {
        return vec![text];
    }
    let per = chars.div_ceil(n);
    let mut pieces = Vec::with_capacity(n);
    let mut start = 0;
    let mut count = 0;
    for (i, _) in text.char_indices() {
        if count == per {
            pieces.push(&text[start..i]);
            start = i;
            count = 0;
        }
        count += 1;
    }
    pieces.push(&text[start..]);
    pieces
}

/// JSON with object keys sorted, so the hash does not depend on the caller's key order.
fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical_json(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// 64-bit FNV-1a: stable across runs and Rust versions, unlike `DefaultHasher`.
pub(crate) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// A tiny deterministic generator for answer text and vectors (not the fault generator).
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn to_bytes<T: serde::Serialize>(value: &T) -> Bytes {
    // The values serialised here are built by this module from strings and numbers; they
    // always serialise.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(v: Value) -> ChatCompletionRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn content_depends_on_model_and_messages_only() {
        let a =
            request(json!({"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}));
        let b = request(
            json!({"model": "gpt-4.1", "temperature": 0.3, "stream": true,
            "messages": [{"content": "hi", "role": "user"}]}),
        );
        let c = request(
            json!({"model": "deepseek-v3.2", "messages": [{"role": "user", "content": "hi"}]}),
        );
        let d =
            request(json!({"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi!"}]}));
        assert_eq!(expected_content(&a), expected_content(&b));
        assert_ne!(expected_content(&a), expected_content(&c));
        assert_ne!(expected_content(&a), expected_content(&d));
        assert!(expected_content(&a).contains("gpt-4.1"));
        let u = expected_usage(&a);
        assert_eq!(u.prompt_tokens, 3 + 4 + 1);
        assert_eq!(u.total_tokens, u.prompt_tokens + u.completion_tokens);
        assert!(u.completion_tokens > 0);
    }

    #[test]
    fn stream_pieces_join_to_the_answer() {
        let req = request(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}));
        let answer = ChatAnswer::for_request(&req);
        for n in [1, 2, 3, 8, 1000] {
            let pieces = split_chars(&answer.content, n);
            assert!(pieces.len() <= n);
            assert_eq!(pieces.concat(), answer.content);
        }
        assert_eq!(split_chars("", 3), vec![""]);
        assert_eq!(split_chars("héllo", 2), vec!["hél", "lo"]);
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let one = embeddings_json(
            &json!({"model": "e", "input": "hello"}),
            16,
            EmbeddingMode::Random,
        )
        .unwrap();
        let again = embeddings_json(
            &json!({"model": "e", "input": ["hello", "world"]}),
            16,
            EmbeddingMode::Random,
        )
        .unwrap();
        let one: Value = serde_json::from_slice(&one).unwrap();
        let again: Value = serde_json::from_slice(&again).unwrap();
        assert_eq!(one["data"][0]["embedding"], again["data"][0]["embedding"]);
        assert_ne!(again["data"][0]["embedding"], again["data"][1]["embedding"]);
        let v: Vec<f64> = serde_json::from_value(one["data"][0]["embedding"].clone()).unwrap();
        assert_eq!(v.len(), 16);
        let norm: f64 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }

    #[test]
    fn embeddings_reject_bad_input() {
        for body in [
            json!({"model": "e"}),
            json!({"model": "e", "input": []}),
            json!({"model": "e", "input": [1, "a"]}),
            json!({"model": "e", "input": {"a": 1}}),
            json!({"input": "a"}),
            json!({"model": "e", "input": "a", "dimensions": 0}),
            json!({"model": "e", "input": "a", "encoding_format": "hex"}),
            json!([1, 2]),
        ] {
            assert!(
                embeddings_json(&body, 8, EmbeddingMode::Random).is_err(),
                "{body}"
            );
        }
        let tokens = embeddings_json(
            &json!({"model": "e", "input": [[1, 2], [3]]}),
            8,
            EmbeddingMode::Random,
        )
        .unwrap();
        let tokens: Value = serde_json::from_slice(&tokens).unwrap();
        assert_eq!(tokens["usage"]["prompt_tokens"], 3);
    }

    #[test]
    fn base64_matches_known_values() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }
}
