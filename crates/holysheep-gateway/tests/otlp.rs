//! Spans exported over OTLP, as an operator sets it up: the `holysheep-gateway` binary (built
//! with the `otlp` feature) runs with `--demo --otlp` and the standard `OTEL_*` variables
//! pointing at an OTLP collector this test runs in-process (a tonic `TraceService` on
//! loopback); the test checks the spans it receives and their attributes.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holysheep_testkit::{http_client, json_request, send, wait_until};
use http::Method;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::json;
use tonic::{Request, Response, Status};

use support::Binary;

/// The collector: keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A span's attributes as text.
fn attributes(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_collector_with_their_genai_attributes() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_addr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(collector.clone()))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    let server = tokio::spawn(server);

    let gateway = Binary::start(
        &["--demo", "--otlp", "--listen", "127.0.0.1:0"],
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://{collector_addr}"),
            ),
            ("OTEL_SERVICE_NAME", "gateway-under-test".to_owned()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ],
    )
    .await;
    let addr = gateway.addr.clone();

    let client = http_client();
    let url = format!("http://{addr}/v1/chat/completions");
    let body = json!({"model": "gpt-4.1", "stream": true,
        "messages": [{"role": "user", "content": "trace me"}]})
    .to_string();
    let mut request = json_request(Method::POST, &url, None, body.clone());
    request
        .headers_mut()
        .insert("x-request-id", "req-from-the-caller".parse().unwrap());
    let reply = send(&client, request).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // The caller's id comes back; a request without one gets a new one.
    assert_eq!(reply.header("x-request-id"), Some("req-from-the-caller"));
    // The entry is written by a task once the stream has ended.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reply = send(&client, json_request(Method::POST, &url, None, body)).await;
    let generated = reply.header("x-request-id").expect("a new id").to_owned();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");

    let spans = collector.0.clone();
    let arrived = wait_until(Duration::from_secs(20), || {
        spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.name == "chat gpt-4.1")
            .count()
            >= 2
    })
    .await;
    let spans = spans.lock().unwrap().clone();
    assert!(
        arrived,
        "spans received: {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    // The log lines carry the request id with OTLP on too.
    let logged = gateway.lines.lock().unwrap().clone();
    assert!(
        logged
            .iter()
            .any(|l| l.contains("request_id=\"req-from-the-caller\"")),
        "{logged:#?}"
    );
    drop(gateway);
    server.abort();

    let by_id: HashMap<&[u8], &Span> = spans.iter().map(|s| (s.span_id.as_slice(), s)).collect();
    // The first request: its server span carries the caller's id ...
    let http = spans
        .iter()
        .find(|s| {
            attributes(s).get("request_id").map(String::as_str) == Some("req-from-the-caller")
        })
        .expect("the server span of the first request");
    let http_attrs = attributes(http);
    assert_eq!(http.name, "POST /v1/chat/completions");
    assert_eq!(http_attrs["http.response.status_code"], "200");
    // ... its GenAI span is a child, with the GenAI attributes ...
    let genai = spans
        .iter()
        .find(|s| s.parent_span_id == http.span_id)
        .expect("the GenAI span under the server span");
    assert_eq!(genai.name, "chat gpt-4.1");
    assert_eq!(genai.trace_id, http.trace_id);
    let a = attributes(genai);
    assert_eq!(a["gen_ai.operation.name"], "chat");
    assert_eq!(a["gen_ai.request.model"], "gpt-4.1");
    assert_eq!(a["gen_ai.response.model"], "gpt-4.1");
    assert_eq!(a["server.address"], "127.0.0.1");
    assert_eq!(a["holysheep.cache"], "miss");
    assert_eq!(a["holysheep.attempts"], "1");
    assert_eq!(a["http.response.status_code"], "200");
    // A stream nobody asked usage for still has its tokens.
    assert!(
        a["gen_ai.usage.input_tokens"].parse::<u64>().unwrap() > 0,
        "{a:?}"
    );
    assert!(
        a["gen_ai.usage.output_tokens"].parse::<u64>().unwrap() > 0,
        "{a:?}"
    );
    assert!(a.contains_key("holysheep.cost_usd"), "{a:?}");
    // ... and no prompt or answer text anywhere.
    for span in &spans {
        for (key, value) in attributes(span) {
            assert!(!value.contains("trace me"), "{key} carries the prompt");
            assert!(!value.contains("Mock answer"), "{key} carries the answer");
        }
    }
    // The upstream attempt is a child of the GenAI span.
    let attempt = spans
        .iter()
        .find(|s| s.parent_span_id == genai.span_id)
        .expect("the attempt span under the GenAI span");
    let a = attributes(attempt);
    assert_eq!(attempt.name, "POST");
    assert_eq!(a["holysheep.attempt"], "1");
    assert_eq!(a["url.path"], "/chat/completions");
    assert_eq!(a["http.response.status_code"], "200");
    assert!(by_id.contains_key(attempt.parent_span_id.as_slice()));
    // The second request was a hit: no attempt, and its own id.
    let second = spans
        .iter()
        .find(|s| attributes(s).get("request_id") == Some(&generated))
        .expect("the second server span");
    let hit = spans
        .iter()
        .find(|s| s.parent_span_id == second.span_id)
        .expect("its GenAI span");
    assert_eq!(attributes(hit)["holysheep.cache"], "hit");
    assert_eq!(attributes(hit)["holysheep.cache.via"], "exact");
    assert!(!spans.iter().any(|s| s.parent_span_id == hit.span_id));
}
