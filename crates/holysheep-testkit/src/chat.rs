//! Chat request bodies and what the mock upstream answers them with.

use holysheep_core::chat::{ChatCompletionRequest, Usage};
use holysheep_mock::ChatAnswer;
use serde_json::{Value, json};

/// A non-streamed chat request body for one user message.
pub fn chat_body(model: &str, prompt: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": prompt}]})
}

/// A streamed chat request body for one user message; `include_usage` asks for a usage chunk at
/// the end (`stream_options.include_usage`).
pub fn stream_body(model: &str, prompt: &str, include_usage: bool) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": true,
        "stream_options": {"include_usage": include_usage}
    })
}

/// The text the mock upstream answers a chat request `body` with
/// ([`holysheep_mock::expected_content`]); panics when `body` is not a chat request.
pub fn expected_content(body: &Value) -> String {
    holysheep_mock::expected_content(&parse(body))
}

/// The token counts the mock upstream reports for a chat request `body`
/// ([`holysheep_mock::expected_usage`]); panics when `body` is not a chat request.
pub fn expected_usage(body: &Value) -> Usage {
    holysheep_mock::expected_usage(&parse(body))
}

/// The whole answer the mock upstream gives a chat request `body`, to render as JSON or as a
/// stream without a server; panics when `body` is not a chat request.
pub fn mock_answer(body: &Value) -> ChatAnswer {
    ChatAnswer::for_request(&parse(body))
}

fn parse(body: &Value) -> ChatCompletionRequest {
    serde_json::from_value(body.clone())
        .unwrap_or_else(|e| panic!("not a chat request ({e}): {body}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_chat_requests() {
        let plain = parse(&chat_body("gpt-4.1", "hi"));
        assert_eq!(plain.model, "gpt-4.1");
        assert_eq!(plain.messages[0].text(), Some("hi"));
        assert!(!plain.is_stream());
        let streamed = parse(&stream_body("gpt-4.1", "hi", true));
        assert!(streamed.is_stream() && streamed.include_usage());
        assert!(!parse(&stream_body("gpt-4.1", "hi", false)).include_usage());
        // The mock answers by model and messages only.
        assert_eq!(
            expected_content(&chat_body("gpt-4.1", "hi")),
            expected_content(&stream_body("gpt-4.1", "hi", true))
        );
        let usage = expected_usage(&chat_body("gpt-4.1", "hi"));
        assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0);
        let answer: Value =
            serde_json::from_slice(&mock_answer(&chat_body("gpt-4.1", "hi")).to_json()).unwrap();
        assert_eq!(
            answer["choices"][0]["message"]["content"],
            expected_content(&chat_body("gpt-4.1", "hi"))
        );
        assert_eq!(answer["usage"]["total_tokens"], usage.total_tokens);
    }
}
