//! What the semantic cache reads from a request: whether it applies, the context bucket, and the
//! text compared by meaning.

use holysheep_cache::{DefaultKeyPolicy, KeyPolicy, KeyRequest, ParsedBody};
use serde_json::Value;

use crate::index::BucketId;

/// When the semantic cache leaves a request alone (it then goes upstream, or to the exact cache
/// only). Each rule can be turned off; the defaults are the safe ones.
///
/// A request is also always skipped when its `Cache-Control` forbids reading the cache
/// (`no-store`, `no-cache`, `max-age=0`), when it asks for it off
/// (`x-holysheep-semantic-cache: off`), when it is not a chat completion, or when no `CacheLayer`
/// is around the semantic cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkipRules {
    /// Skip requests asking for more than one choice (`n` > 1). Default: on.
    pub several_choices: bool,
    /// Skip requests with tools or functions, or with a tool call or tool result among their
    /// messages: an agent's step depends on state the words do not show. Default: on.
    pub tools: bool,
    /// Skip requests whose last message is not user text (an assistant prefill, a tool result,
    /// an image). Off, the text of the last message is compared whatever its role. Default: on.
    pub last_not_user_text: bool,
    /// Skip prompts shorter than this many characters: a few words carry too little meaning to
    /// compare. Default: [`SkipRules::DEFAULT_MIN_PROMPT_CHARS`].
    pub min_prompt_chars: usize,
    /// Skip streamed requests asking for `logprobs`: a replayed stream cannot carry the log
    /// probabilities of the tokens it claims. Default: on.
    pub stream_with_logprobs: bool,
}

impl SkipRules {
    /// The default shortest prompt compared by meaning: 10 characters.
    pub const DEFAULT_MIN_PROMPT_CHARS: usize = 10;
}

impl Default for SkipRules {
    fn default() -> Self {
        Self {
            several_choices: true,
            tools: true,
            last_not_user_text: true,
            min_prompt_chars: Self::DEFAULT_MIN_PROMPT_CHARS,
            stream_with_logprobs: true,
        }
    }
}

/// Why a request was not looked up by meaning: the `reason` label of
/// `holysheep_semantic_skipped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Skip {
    /// Not enabled for this request (layer off, tenant not opted in, request said off).
    Off,
    /// No `CacheAccess`: no exact cache around, or the exact cache bypassed the request.
    NoCache,
    /// The request's `Cache-Control` forbids reading.
    NoRead,
    /// Not a chat completion with messages.
    NotChat,
    SeveralChoices,
    Tools,
    NotUserText,
    Short,
    StreamLogprobs,
}

impl Skip {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::NoCache => "no_cache",
            Self::NoRead => "no_read",
            Self::NotChat => "not_chat",
            Self::SeveralChoices => "n",
            Self::Tools => "tools",
            Self::NotUserText => "not_user_text",
            Self::Short => "short",
            Self::StreamLogprobs => "stream_logprobs",
        }
    }
}

/// A request the semantic cache applies to.
#[derive(Debug)]
pub(crate) struct Question {
    /// Everything that must match exactly, hashed.
    pub(crate) bucket: BucketId,
    /// The last user message's text, compared by meaning.
    pub(crate) prompt: String,
}

/// What is hashed into a bucket besides the request itself.
pub(crate) struct Context<'a> {
    pub(crate) path: &'a str,
    pub(crate) upstream: &'a str,
    pub(crate) namespace: Option<&'a str>,
    /// Vectors of different embedders are never compared.
    pub(crate) embedder: &'a str,
    pub(crate) dimensions: Option<u32>,
}

/// Reads a chat request: `Err` says why it is skipped.
pub(crate) fn question(rules: &SkipRules, body: &[u8], cx: &Context<'_>) -> Result<Question, Skip> {
    let path = cx.path.trim_end_matches('/');
    if !(path == "chat/completions" || path.ends_with("/chat/completions")) {
        return Err(Skip::NotChat);
    }
    let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(body) else {
        return Err(Skip::NotChat);
    };
    let Some(Value::Array(messages)) = body.get("messages") else {
        return Err(Skip::NotChat);
    };
    let Some(last) = messages.last() else {
        return Err(Skip::NotChat);
    };
    if rules.several_choices && body.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(Skip::SeveralChoices);
    }
    if rules.tools && uses_tools(&body, messages) {
        return Err(Skip::Tools);
    }
    let is_user = last.get("role").and_then(Value::as_str) == Some("user");
    let prompt = match text_of(last.get("content")) {
        Some(text) if is_user || !rules.last_not_user_text => text,
        _ => return Err(Skip::NotUserText),
    };
    if prompt.trim().chars().count() < rules.min_prompt_chars {
        return Err(Skip::Short);
    }
    let streamed = body.get("stream").and_then(Value::as_bool) == Some(true);
    if rules.stream_with_logprobs
        && streamed
        && body.get("logprobs").and_then(Value::as_bool) == Some(true)
    {
        return Err(Skip::StreamLogprobs);
    }

    // The context: the whole request (as the exact cache keys it, tenant and upstream included)
    // with the last message's content blanked, plus the embedder.
    if let Some(Value::Array(messages)) = body.get_mut("messages")
        && let Some(Value::Object(last)) = messages.last_mut()
    {
        last.insert("content".into(), Value::Null);
    }
    body.insert(
        "holysheep_semantic_embedder".into(),
        serde_json::json!([cx.embedder, cx.dimensions]),
    );
    let parsed = ParsedBody::from_value(Value::Object(body));
    let key = DefaultKeyPolicy::new()
        .key(&KeyRequest {
            path: cx.path,
            upstream: cx.upstream,
            namespace: cx.namespace,
            body: &parsed,
        })
        .ok_or(Skip::NotChat)?;
    let bucket = BucketId::from_str_radix(key.hash(), 16).map_err(|_| Skip::NotChat)?;
    Ok(Question { bucket, prompt })
}

fn uses_tools(body: &serde_json::Map<String, Value>, messages: &[Value]) -> bool {
    let present = |v: Option<&Value>| match v {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    };
    present(body.get("tools"))
        || present(body.get("functions"))
        || messages.iter().any(|m| {
            matches!(
                m.get("role").and_then(Value::as_str),
                Some("tool" | "function")
            ) || present(m.get("tool_calls"))
                || present(m.get("function_call"))
        })
}

/// A message's text: a string, or content parts that are all text. `None` for anything else
/// (an image or audio part makes the message more than its words).
fn text_of(content: Option<&Value>) -> Option<String> {
    match content? {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) if !parts.is_empty() => {
            let texts: Option<Vec<&str>> = parts
                .iter()
                .map(|p| {
                    (p.get("type").and_then(Value::as_str) == Some("text"))
                        .then(|| p.get("text").and_then(Value::as_str))
                        .flatten()
                })
                .collect();
            Some(texts?.join("\n"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cx() -> Context<'static> {
        Context {
            path: "/v1/chat/completions",
            upstream: "https://api.holysheep.ai/v1",
            namespace: Some("tenant-a"),
            embedder: "text-embedding-3-small",
            dimensions: Some(256),
        }
    }

    fn ask(body: Value) -> Result<Question, Skip> {
        question(&SkipRules::default(), body.to_string().as_bytes(), &cx())
    }

    fn chat(messages: Value) -> Value {
        json!({"model": "gpt-4.1", "messages": messages})
    }

    #[test]
    fn only_the_last_user_message_is_left_out_of_the_bucket() {
        let a = ask(chat(
            json!([{"role": "user", "content": "What is the capital of France?"}]),
        ))
        .unwrap();
        let b = ask(chat(
            json!([{"role": "user", "content": "capital of France, please?"}]),
        ))
        .unwrap();
        assert_eq!(a.bucket, b.bucket);
        assert_eq!(a.prompt, "What is the capital of France?");
        let streamed = ask(json!({"model": "gpt-4.1", "stream": true,
            "messages": [{"role": "user", "content": "capital of France, please?"}]}))
        .unwrap();
        assert_eq!(streamed.bucket, a.bucket, "JSON and SSE share answers");

        let q = json!({"role": "user", "content": "What is the capital of France?"});
        let others = [
            chat(json!([{"role": "system", "content": "Answer in French."}, q])),
            chat(
                json!([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, q]),
            ),
            json!({"model": "gpt-4.1", "temperature": 0.2, "messages": [q]}),
            json!({"model": "gpt-4.1", "max_tokens": 5, "messages": [q]}),
            json!({"model": "gpt-4.1", "response_format": {"type": "json_object"}, "messages": [q]}),
            json!({"model": "deepseek-v3.2", "messages": [q]}),
        ];
        for other in others {
            assert_ne!(ask(other.clone()).unwrap().bucket, a.bucket, "{other}");
        }
        let tenant_b = question(
            &SkipRules::default(),
            chat(json!([q])).to_string().as_bytes(),
            &Context {
                namespace: Some("tenant-b"),
                ..cx()
            },
        )
        .unwrap();
        assert_ne!(tenant_b.bucket, a.bucket);
        let other_embedder = question(
            &SkipRules::default(),
            chat(json!([q])).to_string().as_bytes(),
            &Context {
                dimensions: Some(512),
                ..cx()
            },
        )
        .unwrap();
        assert_ne!(other_embedder.bucket, a.bucket);
    }

    #[test]
    fn skip_rules() {
        let q = json!({"role": "user", "content": "What is the capital of France?"});
        let cases = [
            (
                json!({"model": "m", "n": 2, "messages": [q]}),
                Skip::SeveralChoices,
            ),
            (
                json!({"model": "m", "tools": [{"type": "function"}], "messages": [q]}),
                Skip::Tools,
            ),
            (
                chat(
                    json!([{"role": "assistant", "tool_calls": [{"id": "1"}]}, {"role": "tool", "content": "42"}, q]),
                ),
                Skip::Tools,
            ),
            (
                chat(json!([q, {"role": "assistant", "content": "Paris is"}])),
                Skip::NotUserText,
            ),
            (
                chat(
                    json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "What is in this image?"}]}]),
                ),
                Skip::NotUserText,
            ),
            (
                chat(json!([{"role": "user", "content": "Hi there"}])),
                Skip::Short,
            ),
            (
                json!({"model": "m", "stream": true, "logprobs": true, "messages": [q]}),
                Skip::StreamLogprobs,
            ),
            (
                json!({"model": "m", "prompt": "What is the capital of France?"}),
                Skip::NotChat,
            ),
            (chat(json!([])), Skip::NotChat),
        ];
        for (body, skip) in cases {
            assert_eq!(ask(body.clone()).unwrap_err(), skip, "{body}");
        }
        let parts = chat(
            json!([{"role": "user", "content": [{"type": "text", "text": "What is the"}, {"type": "text", "text": "capital of France?"}]}]),
        );
        assert_eq!(
            ask(parts).unwrap().prompt,
            "What is the\ncapital of France?"
        );
        assert_eq!(
            question(
                &SkipRules::default(),
                b"{}",
                &Context {
                    path: "/v1/embeddings",
                    ..cx()
                }
            )
            .unwrap_err(),
            Skip::NotChat
        );
    }

    #[test]
    fn each_rule_can_be_turned_off() {
        let rules = SkipRules {
            several_choices: false,
            tools: false,
            last_not_user_text: false,
            min_prompt_chars: 0,
            stream_with_logprobs: false,
        };
        let ask = |body: Value| question(&rules, body.to_string().as_bytes(), &cx());
        let q = json!({"role": "user", "content": "Hi"});
        assert!(ask(json!({"model": "m", "n": 3, "messages": [q]})).is_ok());
        assert!(
            ask(json!({"model": "m", "tools": [{"type": "function"}], "messages": [q]})).is_ok()
        );
        assert!(
            ask(json!({"model": "m", "stream": true, "logprobs": true, "messages": [q]})).is_ok()
        );
        let prefill = ask(chat(
            json!([q, {"role": "assistant", "content": "Paris is"}]),
        ))
        .unwrap();
        assert_eq!(prefill.prompt, "Paris is");
    }
}
