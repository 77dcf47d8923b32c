//! OpenAI-compatible chat completion types.
//!
//! These types are for *reading*: a layer parses what it needs and forwards the caller's original
//! bytes. Every field the types do not name — including fields that do not exist yet — is kept in
//! an `extra` map, so parsing and re-serialising loses nothing.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer as _, Serialize};
use serde_json::{Map, Value};

/// A `POST /chat/completions` request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    /// The model to use, e.g. `gpt-4.1`.
    pub model: String,
    /// The conversation so far, in order.
    pub messages: Vec<ChatMessage>,
    /// Whether the answer is streamed as Server-Sent Events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Options for streamed answers, e.g. `{"include_usage": true}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<Value>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// The most tokens the answer may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Every other field, unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatCompletionRequest {
    /// Whether the caller asked for a streamed answer.
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether a streamed answer should end with a usage chunk
    /// (`stream_options.include_usage`).
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

/// A chat completion request body checked without building a [`ChatCompletionRequest`]: what a
/// gateway needs to accept a body (its model and how many messages it has), read in one pass that
/// borrows the model from the body and allocates nothing else.
///
/// It accepts no body that [`ChatCompletionRequest`] refuses: the fields the type names are read
/// with the same types (a repeated one is an error), every other value is checked to be JSON
/// that `serde_json::Value` takes (numbers in range, escapes valid). It may refuse a body the
/// type takes (a message that is an array, say): a caller that needs the final word parses the
/// type after a refusal.
///
/// ```
/// use holysheep_core::chat::ChatRequestCheck;
///
/// let body = br#"{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}],"seed":7}"#;
/// let check = ChatRequestCheck::parse(body).unwrap();
/// assert_eq!(check.model, "gpt-4.1");
/// assert_eq!(check.messages, 1);
/// assert!(ChatRequestCheck::parse(br#"{"model":"m","messages":[{"content":"no role"}]}"#).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRequestCheck<'a> {
    /// The `model` field, borrowed from the body unless it holds escapes.
    pub model: Cow<'a, str>,
    /// How many messages `messages` holds.
    pub messages: usize,
}

impl<'a> ChatRequestCheck<'a> {
    /// Checks `body` as a chat completion request.
    pub fn parse(body: &'a [u8]) -> Result<Self, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_slice(body);
        let check = de.deserialize_map(check::Request)?;
        de.end()?;
        Ok(check)
    }
}

mod check {
    //! The visitors behind [`ChatRequestCheck`](super::ChatRequestCheck).

    use std::borrow::Cow;
    use std::fmt;

    use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

    use super::ChatRequestCheck;

    /// Which fields of a request were seen, to refuse a repeated one as the derived type does.
    #[derive(Default)]
    struct Seen {
        stream: bool,
        stream_options: bool,
        temperature: bool,
        max_tokens: bool,
    }

    fn once<E: de::Error>(seen: &mut bool, name: &'static str) -> Result<(), E> {
        if std::mem::replace(seen, true) {
            return Err(E::duplicate_field(name));
        }
        Ok(())
    }

    pub(super) struct Request;

    impl<'de> Visitor<'de> for Request {
        type Value = ChatRequestCheck<'de>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a chat completion request object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut model: Option<Cow<'de, str>> = None;
            let mut messages: Option<usize> = None;
            let mut seen = Seen::default();
            while let Some(key) = map.next_key_seed(Text)? {
                match key.as_ref() {
                    "model" => {
                        if model.is_some() {
                            return Err(de::Error::duplicate_field("model"));
                        }
                        model = Some(map.next_value_seed(Text)?);
                    }
                    "messages" => {
                        if messages.is_some() {
                            return Err(de::Error::duplicate_field("messages"));
                        }
                        messages = Some(map.next_value_seed(Messages)?);
                    }
                    "stream" => {
                        once(&mut seen.stream, "stream")?;
                        map.next_value::<Option<bool>>()?;
                    }
                    "stream_options" => {
                        once(&mut seen.stream_options, "stream_options")?;
                        map.next_value_seed(Any)?;
                    }
                    "temperature" => {
                        once(&mut seen.temperature, "temperature")?;
                        map.next_value::<Option<f64>>()?;
                    }
                    "max_tokens" => {
                        once(&mut seen.max_tokens, "max_tokens")?;
                        map.next_value::<Option<u64>>()?;
                    }
                    _ => map.next_value_seed(Any)?,
                }
            }
            Ok(ChatRequestCheck {
                model: model.ok_or_else(|| de::Error::missing_field("model"))?,
                messages: messages.ok_or_else(|| de::Error::missing_field("messages"))?,
            })
        }
    }

    /// A string, borrowed when the text holds no escape.
    struct Text;

    impl<'de> DeserializeSeed<'de> for Text {
        type Value = Cow<'de, str>;

        fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
            de.deserialize_str(self)
        }
    }

    impl<'de> Visitor<'de> for Text {
        type Value = Cow<'de, str>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }

        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }

        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_owned()))
        }
    }

    /// The `messages` array: each an object with a string `role`; returns how many.
    struct Messages;

    impl<'de> DeserializeSeed<'de> for Messages {
        type Value = usize;

        fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<usize, D::Error> {
            de.deserialize_seq(self)
        }
    }

    impl<'de> Visitor<'de> for Messages {
        type Value = usize;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of messages")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
            let mut count = 0;
            while seq.next_element_seed(Message)?.is_some() {
                count += 1;
            }
            Ok(count)
        }
    }

    struct Message;

    impl<'de> DeserializeSeed<'de> for Message {
        type Value = ();

        fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
            de.deserialize_map(self)
        }
    }

    impl<'de> Visitor<'de> for Message {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a message object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let (mut role, mut content) = (false, false);
            while let Some(key) = map.next_key_seed(Text)? {
                match key.as_ref() {
                    "role" => {
                        once(&mut role, "role")?;
                        map.next_value_seed(Text)?;
                    }
                    "content" => {
                        once(&mut content, "content")?;
                        map.next_value_seed(Any)?;
                    }
                    _ => map.next_value_seed(Any)?,
                }
            }
            if !role {
                return Err(de::Error::missing_field("role"));
            }
            Ok(())
        }
    }

    /// Any JSON value `serde_json::Value` takes, read and dropped.
    struct Any;

    impl<'de> DeserializeSeed<'de> for Any {
        type Value = ();

        fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
            de.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Any {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }

        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }

        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }

        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }

        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }

        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }

        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }

        fn visit_none<E>(self) -> Result<(), E> {
            Ok(())
        }

        fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
            de.deserialize_any(self)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(Any)?.is_some() {}
            Ok(())
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while map.next_key_seed(Text)?.is_some() {
                map.next_value_seed(Any)?;
            }
            Ok(())
        }
    }
}

/// One message of a conversation, or the message of an answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool`, …
    pub role: String,
    /// Text, an array of content parts, or `null` (e.g. an assistant message with tool calls).
    #[serde(default)]
    pub content: Option<Value>,
    /// Every other field (`name`, `tool_calls`, `tool_call_id`, …), unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatMessage {
    /// The content when it is plain text.
    pub fn text(&self) -> Option<&str> {
        self.content.as_ref().and_then(Value::as_str)
    }
}

/// A whole (non-streamed) chat completion answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// The answer's id.
    pub id: String,
    /// Always `chat.completion`.
    pub object: String,
    /// Unix time of creation, in seconds.
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// The answer's choices.
    pub choices: Vec<Choice>,
    /// Token counts, when the upstream reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Every other field, unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One choice of a [`ChatCompletion`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// The choice's index.
    pub index: u32,
    /// The answer's message.
    pub message: ChatMessage,
    /// Why generation stopped: `stop`, `length`, `tool_calls`, `content_filter`, …
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Every other field (`logprobs`, …), unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One Server-Sent-Events chunk of a streamed chat completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    /// The answer's id, the same in every chunk.
    pub id: String,
    /// Always `chat.completion.chunk`.
    pub object: String,
    /// Unix time of creation, in seconds.
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// The choices' deltas; empty in a final usage-only chunk.
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    /// Token counts; set in the final chunk when the caller asked for `include_usage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Every other field, unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One choice's delta within a [`ChatCompletionChunk`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// The choice's index.
    pub index: u32,
    /// What this chunk adds to the choice.
    #[serde(default)]
    pub delta: Delta,
    /// Set in the chunk that ends the choice.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Every other field (`logprobs`, …), unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The part of a message a chunk adds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// The role, usually only in the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// A piece of the answer's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Pieces of tool calls, as the upstream sent them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Value>,
    /// Every other field (`refusal`, `reasoning_content`, …), unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Token counts of one answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the request.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Tokens in the answer.
    #[serde(default)]
    pub completion_tokens: u64,
    /// Their sum.
    #[serde(default)]
    pub total_tokens: u64,
    /// Every other field (`prompt_tokens_details`, …), unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let body = json!({
            "model": "gpt-4.1",
            "messages": [{"role": "user", "content": "hi", "name": "ann"}],
            "temperature": 0.2,
            "response_format": {"type": "json_object"},
            "a_field_from_next_year": [1, 2, 3]
        });
        let req: ChatCompletionRequest = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(req.model, "gpt-4.1");
        assert_eq!(req.messages[0].text(), Some("hi"));
        assert!(!req.is_stream());
        assert_eq!(serde_json::to_value(&req).unwrap(), body);
    }

    /// Bodies at the edges of what a chat request is: [`ChatRequestCheck`] may refuse what the
    /// type takes, never the other way round, and agrees on the model.
    #[test]
    fn the_check_accepts_nothing_the_type_refuses() {
        let bodies: &[&str] = &[
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m\u0031","messages":[{"role":"u","content":null,"name":"x"}]}"#,
            r#"{"model":"m","messages":[]}"#,
            r#"{"model":"m","messages":[{"role":"u"}],"stream":true,"stream_options":{"include_usage":true}}"#,
            r#"{"model":"m","messages":[{"role":"u"}],"temperature":1,"max_tokens":5,"seed":1e3}"#,
            r#"{"model":"m","messages":[{"role":"u"}],"temperature":null,"max_tokens":null,"stream":null}"#,
            // Repeated fields: known ones are refused by both, unknown ones taken.
            r#"{"model":"m","model":"n","messages":[{"role":"u"}]}"#,
            r#"{"model":"m","messages":[{"role":"u"}],"stream":true,"stream":false}"#,
            r#"{"model":"m","messages":[{"role":"u","role":"v"}]}"#,
            r#"{"model":"m","messages":[{"role":"u","content":"a","content":"b"}]}"#,
            r#"{"model":"m","messages":[{"role":"u"}],"x":1,"x":2}"#,
            // Wrong types and missing fields.
            r#"{"model":1,"messages":[{"role":"u"}]}"#,
            r#"{"messages":[{"role":"u"}]}"#,
            r#"{"model":"m"}"#,
            r#"{"model":"m","messages":[{"content":"no role"}]}"#,
            r#"{"model":"m","messages":[{"role":7}]}"#,
            r#"{"model":"m","messages":["user"]}"#,
            r#"{"model":"m","messages":[["user","hi"]]}"#,
            r#"{"model":"m","messages":{"role":"u"}}"#,
            r#"{"model":"m","messages":[{"role":"u"}],"stream":"yes"}"#,
            r#"{"model":"m","messages":[{"role":"u"}],"max_tokens":-1}"#,
            r#"{"model":"m","messages":[{"role":"u"}],"max_tokens":1.5}"#,
            r#"{"model":"m","messages":[{"role":"u"}],"temperature":"hot"}"#,
            // Values `Value` refuses, anywhere.
            r#"{"model":"m","messages":[{"role":"u"}],"seed":1e400}"#,
            r#"{"model":"m","messages":[{"role":"u","content":1e400}]}"#,
            r#"{"model":"m","messages":[{"role":"u","x":[{"y":-1e999}]}]}"#,
            r#"{"model":"m","messages":[{"role":"u"}],"stream_options":1e400}"#,
            r#"{"model":"m","messages":[{"role":"u"}],"temperature":1e400}"#,
            r#"{"model":"m","messages":[{"role":"u","content":"\ud800"}]}"#,
            r#"{"model":"m","messages":[{"role":"u"}],"\ud800":1}"#,
            r#"{"model":"m","messages":[{"role":"u"}],"x":"\q"}"#,
            // Not an object, or not JSON.
            r#"[]"#,
            r#""m""#,
            r#"{"model":"m","messages":[{"role":"u"}]} trailing"#,
            r#"{"model":"m","messages":[{"role":"u"}]"#,
            "",
        ];
        let mut taken = 0;
        for body in bodies {
            let typed = serde_json::from_str::<ChatCompletionRequest>(body);
            if let Ok(check) = ChatRequestCheck::parse(body.as_bytes()) {
                taken += 1;
                let typed = typed.unwrap_or_else(|e| panic!("{body}: the type refuses: {e}"));
                assert_eq!(check.model, typed.model, "{body}");
                assert_eq!(check.messages, typed.messages.len(), "{body}");
            }
        }
        assert_eq!(taken, 7, "the check takes the plain bodies above");
    }

    #[test]
    fn the_check_borrows_the_model() {
        let body = br#"{"model":"gpt-4.1","messages":[{"role":"user"}]}"#;
        let check = ChatRequestCheck::parse(body).unwrap();
        assert!(matches!(check.model, Cow::Borrowed("gpt-4.1")));
    }

    #[test]
    fn stream_flags() {
        let req: ChatCompletionRequest = serde_json::from_value(json!({
            "model": "m", "messages": [], "stream": true,
            "stream_options": {"include_usage": true}
        }))
        .unwrap();
        assert!(req.is_stream());
        assert!(req.include_usage());
    }

    #[test]
    fn chunk_with_usage_only() {
        let chunk: ChatCompletionChunk = serde_json::from_value(json!({
            "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [],
            "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
        }))
        .unwrap();
        assert_eq!(chunk.usage.unwrap().total_tokens, 8);
    }

    #[test]
    fn assistant_message_without_content() {
        let c: ChatCompletion = serde_json::from_value(json!({
            "id": "x", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": null, "tool_calls": []}}]
        }))
        .unwrap();
        assert_eq!(c.choices[0].message.content, None);
        assert!(c.choices[0].message.extra.contains_key("tool_calls"));
    }
}
