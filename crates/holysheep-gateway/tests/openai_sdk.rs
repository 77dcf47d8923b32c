//! The official OpenAI Python SDK, unmodified, talks to the gateway (`holysheep-gateway`)
//! started in-process on loopback in front of the mock upstream: a completion, the same
//! completion again served from the cache, a streamed completion, a cached answer replayed as a
//! stream, embeddings in both encodings, the model list, and a wrong client key.
//!
//! The SDK lives in a virtualenv made once under the cargo target dir and reused by later runs;
//! a file lock keeps concurrent test processes from building it twice. Making it needs
//! `python3` with `venv` and the package registry; when either is missing the test fails with
//! the interpreter's and pip's own output. `PYTHON3` may name the interpreter the virtualenv is
//! made from (default `python3`); `HOLYSHEEP_SDK_PYTHON` may name an interpreter that already
//! has `openai` installed, to skip the virtualenv altogether (for offline machines).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use holysheep_testkit::{
    MockConfig, UPSTREAM_KEY, chat_body, expected_content, expected_usage, http_client, start_mock,
};
use serde_json::Value;
use tokio::process::Command;

use holysheep_gateway::{Config, Gateway, Secret};

/// The SDK versions the test is written against: the 1.x API from 1.50 on, and 2.x, which
/// keeps it.
const OPENAI_REQUIREMENT: &str = "openai>=1.50,<3";

/// The key the SDK presents to the gateway (`HOLYSHEEP_GATEWAY_KEYS`).
const GATEWAY_KEY: &str = "gw-openai-sdk-key";

/// The chat model and the prompts the SDK sends; the Rust side computes the mock's answers to
/// them.
const CHAT_MODEL: &str = "gpt-4.1";
const CACHED_PROMPT: &str = "Say hello to the official SDK.";
const STREAMED_PROMPT: &str = "Stream a reply to the official SDK.";
const EMBEDDING_MODEL: &str = "text-embedding-3-small";

/// Bound on making the virtualenv: the first `pip install` downloads the SDK and its
/// dependencies.
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(600);
/// Bound on the SDK script: a few calls on loopback, plus the SDK's import time.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// Makes the virtualenv unless a finished one with the same requirement is there; prints the
/// path of its interpreter on the last line. Runs under an exclusive lock on `<venv>.lock` so
/// concurrent test processes wait for one build instead of racing; the kernel drops the lock
/// when a killed process dies, so no stale lock is left behind.
const BOOTSTRAP_PY: &str = r#"
import os, shutil, subprocess, sys

venv_dir, requirement = sys.argv[1], sys.argv[2]
windows = os.name == "nt"
python = os.path.join(venv_dir, "Scripts" if windows else "bin", "python.exe" if windows else "python")
marker = os.path.join(venv_dir, ".holysheep-ready")

lock = open(venv_dir + ".lock", "a+")
if windows:
    import msvcrt, time
    while True:
        try:
            msvcrt.locking(lock.fileno(), msvcrt.LK_LOCK, 1)
            break
        except OSError:
            time.sleep(1)
else:
    import fcntl
    fcntl.flock(lock.fileno(), fcntl.LOCK_EX)

try:
    with open(marker) as f:
        ready = f.read() == requirement
except OSError:
    ready = False

if not (ready and os.path.exists(python)):
    # A half-made virtualenv (an earlier run killed mid-install) is rebuilt from scratch.
    shutil.rmtree(venv_dir, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", venv_dir], check=True, timeout=120)
    subprocess.run(
        [python, "-m", "pip", "install", "--disable-pip-version-check", "--quiet", requirement],
        check=True,
        timeout=540,
    )
    subprocess.run([python, "-c", "import openai"], check=True, timeout=60)
    # The marker is written last and atomically: its presence means a usable virtualenv.
    with open(marker + ".tmp", "w") as f:
        f.write(requirement)
    os.replace(marker + ".tmp", marker)

print(python)
"#;

/// The SDK calls. Reads the gateway's URL and the client key from `OPENAI_BASE_URL` and
/// `OPENAI_API_KEY`, as any SDK user would, and prints one JSON object of results.
const SDK_PY: &str = r#"
import json, math, sys
import openai
from openai import OpenAI

chat_model, cached_prompt, streamed_prompt, embedding_model = sys.argv[1:5]

# No SDK retries: a failure must show, not be papered over.
client = OpenAI(max_retries=0, timeout=30.0)
out = {"openai_version": openai.__version__}

def usage_of(usage):
    if usage is None:
        return None
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }

def completion(prompt):
    raw = client.chat.completions.with_raw_response.create(
        model=chat_model, messages=[{"role": "user", "content": prompt}]
    )
    c = raw.parse()
    return {
        "x_cache": raw.headers.get("x-cache"),
        "object": c.object,
        "model": c.model,
        "content": c.choices[0].message.content,
        "role": c.choices[0].message.role,
        "finish_reason": c.choices[0].finish_reason,
        "usage": usage_of(c.usage),
    }

def streamed(prompt):
    raw = client.chat.completions.with_raw_response.create(
        model=chat_model,
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        stream_options={"include_usage": True},
    )
    deltas, finish_reason, usage, chunks = [], None, None, 0
    for chunk in raw.parse():
        chunks += 1
        if chunk.usage is not None:
            usage = usage_of(chunk.usage)
        for choice in chunk.choices:
            if choice.delta.content:
                deltas.append(choice.delta.content)
            if choice.finish_reason:
                finish_reason = choice.finish_reason
    return {
        "x_cache": raw.headers.get("x-cache"),
        "content_type": raw.headers.get("content-type"),
        "chunks": chunks,
        "deltas": deltas,
        "finish_reason": finish_reason,
        "usage": usage,
    }

out["first"] = completion(cached_prompt)
out["second"] = completion(cached_prompt)
out["stream"] = streamed(streamed_prompt)
# The cached JSON answer, asked for as a stream: the cache replays it as SSE.
out["stream_replay"] = streamed(cached_prompt)

# The SDK asks for base64 by default and decodes it itself; float is the other encoding.
inputs = ["tower middleware", "a pooled client"]
b64 = client.embeddings.create(model=embedding_model, input=inputs)
flt = client.embeddings.create(model=embedding_model, input=inputs, encoding_format="float")
out["embeddings"] = {
    "object": b64.object,
    "model": b64.model,
    "count": len(b64.data),
    "indexes": [d.index for d in b64.data],
    "dims": [len(d.embedding) for d in b64.data],
    "all_floats": all(isinstance(x, float) and math.isfinite(x) for d in b64.data for x in d.embedding),
    "float_matches_base64": all(
        isinstance(f.embedding, list)
        and len(f.embedding) == len(b.embedding)
        and all(abs(x - y) <= 1e-6 for x, y in zip(f.embedding, b.embedding))
        for f, b in zip(flt.data, b64.data)
    ) and len(flt.data) == len(b64.data),
    "prompt_tokens": b64.usage.prompt_tokens,
}

out["models"] = [m.id for m in client.models.list()]

try:
    OpenAI(api_key="sk-not-a-gateway-key", max_retries=0, timeout=30.0).models.list()
    out["bad_key"] = {"raised": None}
except openai.AuthenticationError as e:
    out["bad_key"] = {"raised": "AuthenticationError", "status": e.status_code, "code": e.code, "type": e.type}
except openai.APIError as e:
    out["bad_key"] = {"raised": type(e).__name__, "message": str(e)}

print(json.dumps(out))
"#;

/// A finished child process, for assertion messages.
fn describe(output: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `command` to its end within `limit`, panicking with `what` and the output when it does
/// not start, does not finish in time (it is killed then), or fails.
async fn run(what: &str, mut command: Command, limit: Duration) -> Output {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A run that overstays its bound is killed when its future is dropped below.
        .kill_on_drop(true);
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start {command:?}: {e}"));
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within {} s, killed", limit.as_secs()))
        .unwrap_or_else(|e| panic!("{what}: cannot read the output: {e}"));
    assert!(
        output.status.success(),
        "{what} failed\n{}",
        describe(&output)
    );
    output
}

/// A Python script in a temporary file (removed when the handle drops).
fn script_file(source: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .prefix("holysheep-openai-sdk-")
        .suffix(".py")
        .tempfile()
        .expect("a temporary file for the Python script");
    file.write_all(source.as_bytes())
        .expect("the Python script is written");
    file
}

/// The interpreter that has the SDK: `HOLYSHEEP_SDK_PYTHON`, or the virtualenv's, made on
/// first use.
async fn sdk_python() -> PathBuf {
    if let Some(python) = std::env::var_os("HOLYSHEEP_SDK_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("openai-sdk-venv");
    let base = std::env::var_os("PYTHON3").unwrap_or_else(|| "python3".into());
    let script = script_file(BOOTSTRAP_PY);
    let mut command = Command::new(base);
    command
        .arg(script.path())
        .arg(&venv)
        .arg(OPENAI_REQUIREMENT)
        .env("PYTHONUNBUFFERED", "1");
    let output = run(
        "making the OpenAI SDK virtualenv",
        command,
        BOOTSTRAP_TIMEOUT,
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let python = stdout
        .lines()
        .last()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "the bootstrap printed no interpreter\n{}",
                describe(&output)
            )
        });
    PathBuf::from(python)
}

/// Runs the SDK script against `base_url` with `api_key` and returns its JSON results.
async fn run_sdk(python: &Path, base_url: &str, api_key: &str) -> Value {
    let script = script_file(SDK_PY);
    let mut command = Command::new(python);
    command
        .arg(script.path())
        .args([CHAT_MODEL, CACHED_PROMPT, STREAMED_PROMPT, EMBEDDING_MODEL])
        .env("OPENAI_BASE_URL", base_url)
        .env("OPENAI_API_KEY", api_key)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONIOENCODING", "utf-8");
    // Only loopback is used: no proxy from the environment may route the calls elsewhere, and no
    // organisation or project header from the developer's own setup may tag along.
    for name in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "OPENAI_ORG_ID",
        "OPENAI_PROJECT_ID",
        "OPENAI_LOG",
    ] {
        command.env_remove(name);
    }
    command.env("NO_PROXY", "127.0.0.1,localhost");
    let output = run("the OpenAI SDK script", command, SCRIPT_TIMEOUT).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "the SDK script did not print JSON ({e})\n{}",
            describe(&output)
        )
    })
}

/// The usage the mock reports for `prompt`, as the SDK script prints it.
fn usage_json(prompt: &str) -> Value {
    let usage = expected_usage(&chat_body(CHAT_MODEL, prompt));
    serde_json::json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    })
}

/// The value of the `holysheep_requests_total` series for `model` and `cache`, summed over its
/// other labels.
fn requests_total(metrics: &str, model: &str, cache: &str) -> f64 {
    let model = format!("model=\"{model}\"");
    let cache = format!("cache=\"{cache}\"");
    metrics
        .lines()
        .filter(|line| line.starts_with("holysheep_requests_total{"))
        .filter(|line| line.contains(&model) && line.contains(&cache))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_works_unmodified() {
    // First, so a broken Python setup fails before anything else is started.
    let python = sdk_python().await;

    let mock = start_mock(MockConfig::default().api_key(UPSTREAM_KEY)).await;
    let mut config = Config::in_process(mock.base_url(), UPSTREAM_KEY);
    config.gateway_keys = vec![Secret::new(GATEWAY_KEY)];
    let s = &mut config.settings;
    s.server.shutdown_grace_secs = Some(10);
    s.retry.base_ms = Some(1);
    s.retry.cap_ms = Some(10);
    let gateway = Gateway::start(config).await.expect("the gateway starts");
    let base_url = format!("http://{}/v1", gateway.addr());

    let out = run_sdk(&python, &base_url, GATEWAY_KEY).await;
    let ctx = format!("SDK results: {out:#}");

    let cached_text = expected_content(&chat_body(CHAT_MODEL, CACHED_PROMPT));
    let streamed_text = expected_content(&chat_body(CHAT_MODEL, STREAMED_PROMPT));

    // A completion, then the same one from the cache with the same answer.
    let first = &out["first"];
    assert_eq!(first["x_cache"], "MISS", "{ctx}");
    assert_eq!(first["object"], "chat.completion", "{ctx}");
    assert_eq!(first["model"], CHAT_MODEL, "{ctx}");
    assert_eq!(first["role"], "assistant", "{ctx}");
    assert_eq!(first["content"], cached_text.as_str(), "{ctx}");
    assert_eq!(first["finish_reason"], "stop", "{ctx}");
    assert_eq!(first["usage"], usage_json(CACHED_PROMPT), "{ctx}");
    let second = &out["second"];
    assert_eq!(second["x_cache"], "HIT", "{ctx}");
    assert_eq!(second["content"], first["content"], "{ctx}");
    assert_eq!(second["finish_reason"], "stop", "{ctx}");
    assert_eq!(second["usage"], first["usage"], "{ctx}");

    // A streamed completion: the deltas make up the mock's answer, which came in pieces.
    let stream = &out["stream"];
    assert_eq!(stream["x_cache"], "MISS", "{ctx}");
    assert!(
        stream["content_type"]
            .as_str()
            .is_some_and(|t| t.starts_with("text/event-stream")),
        "{ctx}"
    );
    let deltas = stream["deltas"].as_array().expect("deltas");
    assert!(
        deltas.len() > 1,
        "the answer arrived in several deltas: {ctx}"
    );
    let joined: String = deltas.iter().filter_map(Value::as_str).collect();
    assert_eq!(joined, streamed_text, "{ctx}");
    assert_eq!(stream["finish_reason"], "stop", "{ctx}");
    assert_eq!(stream["usage"], usage_json(STREAMED_PROMPT), "{ctx}");

    // The cached JSON answer replayed as a stream the SDK reads like any other.
    let replay = &out["stream_replay"];
    assert_eq!(replay["x_cache"], "HIT", "{ctx}");
    let joined: String = replay["deltas"]
        .as_array()
        .expect("deltas")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(joined, cached_text, "{ctx}");
    assert_eq!(replay["finish_reason"], "stop", "{ctx}");
    assert_eq!(replay["usage"], usage_json(CACHED_PROMPT), "{ctx}");

    // Embeddings: the SDK's default base64 decodes to the same vectors as float.
    let emb = &out["embeddings"];
    assert_eq!(emb["object"], "list", "{ctx}");
    assert_eq!(emb["model"], EMBEDDING_MODEL, "{ctx}");
    assert_eq!(emb["count"], 2, "{ctx}");
    assert_eq!(emb["indexes"], serde_json::json!([0, 1]), "{ctx}");
    let dims = MockConfig::default().embedding_dimensions;
    assert_eq!(emb["dims"], serde_json::json!([dims, dims]), "{ctx}");
    assert_eq!(emb["all_floats"], true, "{ctx}");
    assert_eq!(emb["float_matches_base64"], true, "{ctx}");
    assert!(
        emb["prompt_tokens"].as_u64().is_some_and(|n| n > 0),
        "{ctx}"
    );

    let models: Vec<&str> = out["models"]
        .as_array()
        .expect("models")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(models, holysheep_mock::DEFAULT_MODELS, "{ctx}");

    // A key the gateway does not know is the SDK's own AuthenticationError.
    let bad = &out["bad_key"];
    assert_eq!(bad["raised"], "AuthenticationError", "{ctx}");
    assert_eq!(bad["status"], 401, "{ctx}");
    assert_eq!(bad["code"], "invalid_api_key", "{ctx}");

    // What the upstream saw: one call per distinct chat request (the hit and the replay never
    // left the gateway), one per embeddings encoding, one model list (the rejected caller's
    // never arrived), and always the gateway's own key, never the client's.
    let stats = mock.stats();
    assert_eq!(stats.chat_requests(), 2, "{ctx}");
    assert_eq!(stats.stream_requests(), 1, "{ctx}");
    assert_eq!(stats.embedding_requests(), 2, "{ctx}");
    assert_eq!(stats.requests_for_path("/v1/models"), 1, "{ctx}");
    let last = stats.last_request().expect("the mock saw requests");
    assert_eq!(
        last.authorization(),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );

    // The gateway's metrics count the two hits.
    let metrics_url = format!("http://{}/metrics", gateway.addr());
    let response = http_client()
        .get(metrics_url.parse().expect("a metrics URL"))
        .await
        .expect("the gateway serves /metrics");
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("the whole metrics body")
        .to_bytes();
    let metrics = String::from_utf8_lossy(&body);
    assert_eq!(
        requests_total(&metrics, CHAT_MODEL, "hit"),
        2.0,
        "{metrics}"
    );

    assert!(gateway.shutdown().await, "the gateway stops cleanly");
    mock.shutdown().await;
}
