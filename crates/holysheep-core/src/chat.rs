//! OpenAI-compatible chat completion types.
//!
//! These types are for *reading*: a layer parses what it needs and forwards the caller's original
//! bytes. Every field the types do not name — including fields that do not exist yet — is kept in
//! an `extra` map, so parsing and re-serialising loses nothing.

use serde::{Deserialize, Serialize};
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
