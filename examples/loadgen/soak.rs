//! `soak`: minutes of mixed traffic against the gateway while the upstream fails now and then
//! and Redis is killed and restarted, sampling memory, open files and the in-flight gauge to
//! find leaks and stuck counters.
//!
//! The traffic, each kind from its own closed-loop workers on one pooled hyper client:
//!
//! - **JSON** and **streamed** chat, every answer read to its end and compared with the text the
//!   mock gives for that question (repeats of popular prompts are cache hits, the rest new);
//! - **slow readers**: read the first frame of the answer, stall for seconds, then read the rest,
//!   which must be complete;
//! - **hang-ups mid-stream**: read the first frame of a streamed answer and drop the connection;
//! - **hang-ups while waiting**: give up on a new prompt after a few milliseconds, usually before
//!   the answer's head (the connection is dropped).
//!
//! Everything runs in this one process (mock, gateway, load clients; `redis-server` is a child),
//! so VmRSS (`/proc/self/status`) and the open file count (`/proc/self/fd`) are the whole
//! harness's, not the gateway's alone: the load is steady, so growth after warm-up is what tells
//! a leak.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use holysheep_core::BoxError;
use holysheep_core::chat::{ChatCompletion, ChatCompletionChunk, ChatCompletionRequest};
use holysheep_core::sse::SseParser;
use holysheep_mock::{MockServer, Stats};
use holysheep_testkit::redis::RedisServer;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::report::{Table, dur, pct, sig3};
use crate::targets::HttpTarget;
use crate::workload::{Prompts, Workload, Zipf, chat_body, splitmix64};
use crate::{Opts, Output, driver, svg, system};

/// The bound of the gateway's memory cache (the front tier before Redis) in the soak: small, so
/// it is at its steady size within warm-up (a bound still being filled would look like growth).
const SOAK_CACHE_BYTES: u64 = 4 * 1024 * 1024;

/// Redis is down this long at each restart.
const REDIS_DOWN: Duration = Duration::from_secs(5);

/// The longest the in-flight gauge may take to come back to 0 after the load stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// RSS growth after warm-up within this many MB counts as flat ("within a few MB").
const FLAT_MB: f64 = 5.0;

/// One kind of caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Json,
    Stream,
    SlowReader,
    HangUpMidStream,
    HangUpWaiting,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Json,
        Kind::Stream,
        Kind::SlowReader,
        Kind::HangUpMidStream,
        Kind::HangUpWaiting,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Json => "JSON",
            Kind::Stream => "streamed",
            Kind::SlowReader => "slow reader (JSON or streamed)",
            Kind::HangUpMidStream => "hang-up mid-stream",
            Kind::HangUpWaiting => "hang-up while waiting (new prompt)",
        }
    }

    /// Closed-loop workers of this kind.
    fn workers(self) -> usize {
        match self {
            Kind::Json => 12,
            Kind::Stream => 6,
            Kind::SlowReader => 4,
            Kind::HangUpMidStream | Kind::HangUpWaiting => 2,
        }
    }
}

/// How one request ended.
enum Ending {
    /// The whole answer arrived and was the mock's answer to that question.
    Complete { hit: bool },
    /// The caller hung up as it meant to (an intended ending, not an error); `hit` when the
    /// answer's head had come and said `x-cache: HIT`.
    HungUp { hit: bool },
}

/// A request that did not end as its caller meant: what the caller saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Failure {
    /// No answer head (connection refused or reset, or the head was cut).
    Transport,
    /// An answer other than 200.
    Status(u16),
    /// The body failed midway.
    BodyCut,
    /// A stream without its final chunk or `[DONE]`.
    IncompleteStream,
    /// A body that is not a completion.
    NotACompletion,
    /// A completion with another text than the mock's for that question.
    WrongAnswer,
}

impl Failure {
    fn name(self) -> String {
        match self {
            Failure::Transport => "transport error (no answer)".to_owned(),
            Failure::Status(status) => format!("status {status}"),
            Failure::BodyCut => "body cut midway".to_owned(),
            Failure::IncompleteStream => "stream without its end".to_owned(),
            Failure::NotACompletion => "not a completion".to_owned(),
            Failure::WrongAnswer => "wrong answer text".to_owned(),
        }
    }
}

/// What one kind of caller saw over the run.
struct Tally {
    sent: u64,
    complete: u64,
    hits: u64,
    hung_up: u64,
    failures: BTreeMap<Failure, u64>,
    /// Time to the last byte of complete answers, in ns.
    latency: Histogram<u64>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            sent: 0,
            complete: 0,
            hits: 0,
            hung_up: 0,
            failures: BTreeMap::new(),
            latency: driver::histogram(),
        }
    }

    fn failed(&self) -> u64 {
        self.failures.values().sum()
    }
}

/// Counters shared by the workers: one [`Tally`] per kind, all bounded in size.
struct Tallies {
    by_kind: Mutex<BTreeMap<Kind, Tally>>,
    done: AtomicU64,
    failed: AtomicU64,
}

impl Tallies {
    fn new() -> Self {
        Tallies {
            by_kind: Mutex::new(Kind::ALL.iter().map(|k| (*k, Tally::new())).collect()),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Kind, Tally>> {
        self.by_kind.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, kind: Kind, took: Duration, ending: Result<Ending, Failure>) {
        self.done.fetch_add(1, Ordering::Relaxed);
        let mut all = self.lock();
        let Some(tally) = all.get_mut(&kind) else {
            return;
        };
        tally.sent += 1;
        match ending {
            Ok(Ending::Complete { hit }) => {
                tally.complete += 1;
                tally.hits += u64::from(hit);
                let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
                tally.latency.saturating_record(nanos.max(1));
            }
            Ok(Ending::HungUp { hit }) => {
                tally.hung_up += 1;
                tally.hits += u64::from(hit);
            }
            Err(failure) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                *tally.failures.entry(failure).or_default() += 1;
            }
        }
    }
}

/// One sample of the process and the gateway.
#[derive(Debug, Clone)]
struct Sample {
    /// Seconds since the load started.
    t: f64,
    rss_kb: u64,
    fds: usize,
    /// `holysheep_in_flight_requests`, `None` when `/metrics` did not answer or lacks it.
    in_flight: Option<f64>,
    /// `holysheep_pool_detached_slots`.
    detached: Option<f64>,
    /// Requests the mock upstream is handling (a stream until its last byte).
    upstream_in_flight: u64,
    /// The 1-minute load average of the machine.
    load1: f64,
    /// Requests finished so far.
    done: u64,
}

/// The value of an unlabelled gauge or counter `name` in Prometheus text.
pub(crate) fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// What the gateway's `/metrics` says about the two gauges the soak watches.
async fn scrape(target: &HttpTarget) -> (Option<f64>, Option<f64>) {
    let request = http::Request::get(target.url().clone()).body(Full::new(Bytes::new()));
    let text = match target.request(request).await {
        Ok(response) if response.status() == 200 => match response.into_body().collect().await {
            Ok(body) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
            Err(_) => return (None, None),
        },
        _ => return (None, None),
    };
    (
        metric_value(&text, holysheep::metrics::names::IN_FLIGHT),
        metric_value(&text, holysheep::metrics::names::POOL_DETACHED_SLOTS),
    )
}

async fn sample(start: Instant, metrics: &HttpTarget, tallies: &Tallies, mock: &Stats) -> Sample {
    let (in_flight, detached) = scrape(metrics).await;
    Sample {
        t: start.elapsed().as_secs_f64(),
        rss_kb: system::rss_kb().unwrap_or(0),
        fds: system::open_fds().unwrap_or(0),
        in_flight,
        detached,
        upstream_in_flight: mock.in_flight(),
        load1: system::load_average().unwrap_or(0.0),
        done: tallies.done.load(Ordering::Relaxed),
    }
}

/// Reads what is left of `body` onto `buf`.
async fn read_rest(body: &mut Incoming, buf: &mut BytesMut) -> Result<(), Failure> {
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Failure::BodyCut)?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
        }
    }
    Ok(())
}

/// Reads `body` up to its first data frame (`false` when it ended before one).
async fn read_first(body: &mut Incoming, buf: &mut BytesMut) -> Result<bool, Failure> {
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Failure::BodyCut)?;
        if let Ok(data) = frame.into_data()
            && !data.is_empty()
        {
            buf.extend_from_slice(&data);
            return Ok(true);
        }
    }
    Ok(false)
}

/// Checks that `body` is the whole answer the mock gives to `request`: the JSON completion, or
/// the stream with its final chunk and `[DONE]`.
fn check_answer(request: &[u8], body: &[u8], stream: bool) -> Result<(), Failure> {
    let asked: ChatCompletionRequest =
        serde_json::from_slice(request).map_err(|_| Failure::NotACompletion)?;
    let text = if stream {
        streamed_text(body)?
    } else {
        let answer: ChatCompletion =
            serde_json::from_slice(body).map_err(|_| Failure::NotACompletion)?;
        answer
            .choices
            .first()
            .and_then(|c| c.message.text())
            .ok_or(Failure::NotACompletion)?
            .to_owned()
    };
    if text == holysheep_mock::expected_content(&asked) {
        Ok(())
    } else {
        Err(Failure::WrongAnswer)
    }
}

/// The text of a whole stream; an error when its final chunk or `[DONE]` is missing.
fn streamed_text(body: &[u8]) -> Result<String, Failure> {
    let mut parser = SseParser::new();
    parser.push(body);
    let (mut text, mut finished, mut done) = (String::new(), false, false);
    while let Some(event) = parser.next_event() {
        if event.is_done() {
            done = true;
            continue;
        }
        let chunk: ChatCompletionChunk =
            serde_json::from_str(&event.data).map_err(|_| Failure::NotACompletion)?;
        for choice in chunk.choices {
            if let Some(content) = choice.delta.content {
                text.push_str(&content);
            }
            finished |= choice.finish_reason.is_some();
        }
    }
    if finished && done && parser.buffered() == 0 {
        Ok(text)
    } else {
        Err(Failure::IncompleteStream)
    }
}

fn is_hit(response: &http::Response<Incoming>) -> bool {
    response
        .headers()
        .get(holysheep::cache::X_CACHE)
        .is_some_and(|v| v.as_bytes() == b"HIT")
}

/// Sends one request of `kind` and follows it to its end (or to its caller's hang-up).
async fn one(target: &HttpTarget, call: Call) -> Result<Ending, Failure> {
    if call.kind == Kind::HangUpWaiting {
        // Between 5 and 100 ms: mostly before the answer's head (a miss takes the upstream's
        // latency), sometimes during a retry's backoff or just after the answer.
        let patience = Duration::from_millis(5 + splitmix64(call.index) % 96);
        return match tokio::time::timeout(patience, follow(target, call)).await {
            Ok(ending) => ending,
            Err(_) => Ok(Ending::HungUp { hit: false }),
        };
    }
    follow(target, call).await
}

/// Sends one request and reads its answer as a caller of `kind` does.
async fn follow(target: &HttpTarget, call: Call) -> Result<Ending, Failure> {
    let Call {
        kind,
        index,
        body,
        stream,
    } = call;
    let mut response = target
        .send(body.clone())
        .await
        .map_err(|_| Failure::Transport)?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(Failure::Status(status));
    }
    let hit = is_hit(&response);
    let mut buf = BytesMut::new();
    match kind {
        Kind::HangUpMidStream => {
            if read_first(response.body_mut(), &mut buf).await? {
                // Dropping the unfinished body closes the connection: the caller is gone.
                drop(response);
                return Ok(Ending::HungUp { hit });
            }
            // The answer ended before a first data frame: it was empty.
            check_answer(&body, &buf, stream)?;
            Ok(Ending::Complete { hit })
        }
        Kind::SlowReader => {
            if read_first(response.body_mut(), &mut buf).await? {
                // Stall 2-5 s with the rest unread.
                let stall = 2_000 + (splitmix64(index) >> 8) % 3_000;
                tokio::time::sleep(Duration::from_millis(stall)).await;
                read_rest(response.body_mut(), &mut buf).await?;
            }
            check_answer(&body, &buf, stream)?;
            Ok(Ending::Complete { hit })
        }
        Kind::Json | Kind::Stream | Kind::HangUpWaiting => {
            read_rest(response.body_mut(), &mut buf).await?;
            check_answer(&body, &buf, stream)?;
            Ok(Ending::Complete { hit })
        }
    }
}

/// One request to send: who sends it, its number, its body and whether it asks for a stream.
struct Call {
    kind: Kind,
    index: u64,
    body: Bytes,
    stream: bool,
}

impl Call {
    /// The request of `kind` at `index`.
    fn new(kind: Kind, index: u64, mixed: &Workload, seed: u64) -> Self {
        let stream = match kind {
            Kind::Json | Kind::HangUpWaiting => false,
            Kind::Stream | Kind::HangUpMidStream => true,
            Kind::SlowReader => index.is_multiple_of(2),
        };
        let prompt = match kind {
            // A new prompt, so the caller waits for the upstream.
            Kind::HangUpWaiting => Workload::new(Prompts::Unique, seed).prompt_of(index),
            _ => mixed.prompt_of(index),
        };
        Call {
            kind,
            index,
            body: chat_body(prompt, seed, stream),
            stream,
        }
    }
}

/// A Redis kill or restart, at seconds since the load started.
type Event = (f64, String);

/// Kills the harness's `redis-server` at each of `at` (times since `start`) and starts it again
/// on the same port [`REDIS_DOWN`] later (empty: it keeps no data). Returns the server, so it
/// outlives the gateway.
async fn redis_restarts(
    mut redis: RedisServer,
    start: Instant,
    at: Vec<Duration>,
    events: Arc<Mutex<Vec<Event>>>,
) -> RedisServer {
    let note = |text: String| {
        let t = start.elapsed().as_secs_f64();
        eprintln!("  [soak] t={t:>5.1}s {text}");
        events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((t, text));
    };
    for when in at {
        tokio::time::sleep_until(start + when).await;
        // The testkit's kill and restart wait for the process: blocking, off the async workers.
        tokio::task::block_in_place(|| redis.kill());
        note(format!(
            "redis-server killed (SIGKILL), port {}",
            redis.port()
        ));
        tokio::time::sleep(REDIS_DOWN).await;
        match tokio::task::block_in_place(|| redis.restart()) {
            Ok(()) => note("redis-server restarted, empty".to_owned()),
            Err(e) => note(format!("redis-server did not restart: {e}")),
        }
    }
    redis
}

/// Keys in the harness's Redis (`redis-cli DBSIZE`), to show it is written again after its
/// restarts.
async fn redis_keys(port: u16) -> Option<u64> {
    let output = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "dbsize"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .ok()?
    .ok()?;
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

/// RSS over the soak, with the end of warm-up and the Redis restarts as vertical lines.
fn rss_chart(samples: &[Sample], events: &[Event], warm_up: f64) -> String {
    let points: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| (s.t, s.rss_kb as f64 / 1024.0))
        .collect();
    let mut markers = vec![(warm_up, "warm-up ends".to_owned(), 2)];
    for (i, (t, _)) in events.iter().enumerate() {
        // Events come in pairs: killed, then back.
        markers.push(if i % 2 == 0 {
            (*t, "Redis killed".to_owned(), 0)
        } else {
            (*t, "Redis back".to_owned(), 3)
        });
    }
    svg::over_time_chart(
        "Soak: VmRSS of the harness process (gateway + mock + load clients)",
        "VmRSS (MB)",
        "VmRSS",
        &points,
        &markers,
    )
}

/// The mean RSS (MB) of the samples with `t` in `[from, to)`.
fn mean_mb(samples: &[Sample], from: f64, to: f64) -> Option<f64> {
    let values: Vec<f64> = samples
        .iter()
        .filter(|s| s.t >= from && s.t < to)
        .map(|s| s.rss_kb as f64 / 1024.0)
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Least-squares slope of RSS (MB per minute) over the samples from `from` on.
fn slope_mb_per_min(samples: &[Sample], from: f64) -> f64 {
    let points: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.t >= from)
        .map(|s| (s.t / 60.0, s.rss_kb as f64 / 1024.0))
        .collect();
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx > 0.0 { sxy / sxx } else { 0.0 }
}

fn gauge_text(value: Option<f64>) -> String {
    value.map_or_else(|| "absent".to_owned(), |v| format!("{v}"))
}

pub(crate) async fn soak(opts: &Opts, out: &mut Output) -> Result<(), BoxError> {
    let duration = opts.duration.unwrap_or(Duration::from_secs(600));
    let sample_every = opts.sample_every;
    if duration < Duration::from_secs(10) || sample_every.is_zero() {
        return Err(
            "the soak needs --duration of 10 s or more and a positive --sample-every".into(),
        );
    }
    let warm_up = Duration::from_secs(60).min(duration / 5);
    let redis = RedisServer::start()
        .map_err(|e| format!("the soak restarts its own redis-server, which did not start: {e}"))?;
    let redis_port = redis.port();
    let mock = MockServer::start(
        crate::world(opts).stream_gap(crate::scaled(opts, Duration::from_millis(100))),
    )
    .await?;
    let mut config = crate::gateway_config(opts, &mock.base_url(), SOAK_CACHE_BYTES);
    config.settings.cache.redis = Some(vec![redis.url().to_owned()]);
    let gateway = holysheep_gateway::Gateway::start(config).await?;
    let load = Arc::new(HttpTarget::pooled(&crate::gateway_url(&gateway))?);
    let metrics = HttpTarget::pooled(&format!("http://{}/metrics", gateway.addr()))?;

    let mixed = Workload::new(
        Prompts::Mixed {
            zipf: Zipf::new(opts.prompts, opts.zipf_s),
            hot: opts.repeat_share,
        },
        opts.seed,
    );
    let tallies = Arc::new(Tallies::new());
    let events: Arc<Mutex<Vec<Event>>> = Arc::default();

    out.say("## Soak (issue 11)");
    out.say("");
    out.say(format!(
        "{} of mixed traffic through the gateway (in-process, Redis cache `{}` with a {} MiB \
         memory front tier) to the mock upstream: the article's world time-compressed by {} \
         (log-normal latency median {} p99 {}, cold connection penalty {}, 2.3% of requests \
         answered 500/502/503 at random), streams of 8 chunks {} apart. Callers: {}. Prompts: \
         {:.0}% from {} popular ones by Zipf(s={}) (cache hits once seen), the rest new. \
         Redis is killed (SIGKILL) {} times, evenly spread over the run, and restarted empty \
         on the same port {} later each time. Every {}: VmRSS from /proc/self/status and the open file count from \
         /proc/self/fd of this process (the harness: gateway + mock + load clients; \
         redis-server is a separate process), and `holysheep_in_flight_requests` and \
         `holysheep_pool_detached_slots` from the gateway's /metrics. Warm-up: the first {}.",
        dur(duration),
        redis.url(),
        SOAK_CACHE_BYTES >> 20,
        opts.time_scale,
        dur(crate::scaled(opts, Duration::from_millis(1000))),
        dur(crate::scaled(opts, Duration::from_millis(4500))),
        dur(crate::scaled(opts, Duration::from_millis(250))),
        dur(crate::scaled(opts, Duration::from_millis(100))),
        Kind::ALL
            .iter()
            .map(|k| format!("{} x{}", k.name(), k.workers()))
            .collect::<Vec<_>>()
            .join(", "),
        opts.repeat_share * 100.0,
        opts.prompts,
        opts.zipf_s,
        opts.redis_restarts,
        dur(REDIS_DOWN),
        dur(sample_every),
        dur(warm_up),
    ));
    out.say("");

    let start = Instant::now();
    let deadline = start + duration;
    let before = sample(start, &metrics, &tallies, mock.stats()).await;
    let restarts = tokio::spawn(redis_restarts(
        redis,
        start,
        (1..=opts.redis_restarts)
            .map(|i| duration * i / (opts.redis_restarts + 1))
            .collect(),
        events.clone(),
    ));
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for kind in Kind::ALL {
        for _ in 0..kind.workers() {
            let (load, tallies, next, mixed) =
                (load.clone(), tallies.clone(), next.clone(), mixed.clone());
            let seed = opts.seed;
            workers.spawn(async move {
                while Instant::now() < deadline {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let call = Call::new(kind, index, &mixed, seed);
                    let sent = Instant::now();
                    let ending = one(&load, call).await;
                    tallies.record(kind, sent.elapsed(), ending);
                }
            });
        }
    }

    let mut samples = vec![before.clone()];
    let mut ticker = tokio::time::interval_at(start + sample_every, sample_every);
    while Instant::now() < deadline {
        ticker.tick().await;
        let s = sample(start, &metrics, &tallies, mock.stats()).await;
        if !opts.quiet {
            eprintln!(
                "  [soak] t={:>5.1}s done={} failed={} rss={:.1} MB fds={} in-flight={} \
                 detached={} upstream-in-flight={} load={:.2}",
                s.t,
                s.done,
                tallies.failed.load(Ordering::Relaxed),
                s.rss_kb as f64 / 1024.0,
                s.fds,
                gauge_text(s.in_flight),
                gauge_text(s.detached),
                s.upstream_in_flight,
                s.load1
            );
        }
        samples.push(s);
    }
    while workers.join_next().await.is_some() {}
    let load_stopped = start.elapsed();
    let redis = restarts.await?;

    // In flight must come back to 0 once the callers are gone (a hang-up's "finish for the
    // cache" read may hold a slot a little longer: bounded).
    let drain_start = Instant::now();
    let mut drained = scrape(&metrics).await;
    while drained != (Some(0.0), Some(0.0)) && drain_start.elapsed() < DRAIN_TIMEOUT {
        tokio::time::sleep(Duration::from_millis(100)).await;
        drained = scrape(&metrics).await;
    }
    let drain_took = drain_start.elapsed();
    let after_load = sample(start, &metrics, &tallies, mock.stats()).await;
    samples.push(after_load.clone());
    // The load clients' connections closed: what is left open is the gateway's own.
    drop(load);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_close = sample(start, &metrics, &tallies, mock.stats()).await;
    let keys = redis_keys(redis_port).await;
    let upstream_open = mock.stats().open_connections();

    // Every worker is done: the tallies are final.
    let all = std::mem::take(&mut *tallies.lock());
    let mut table = Table::new([
        "caller",
        "requests",
        "complete",
        "cache hits",
        "hung up (intended)",
        "failed",
        "P50 to last byte",
        "P99 to last byte",
    ]);
    let mut failed_total = 0;
    let mut sent_total = 0;
    for (kind, t) in all.iter() {
        failed_total += t.failed();
        sent_total += t.sent;
        let (p50, p99) = if t.latency.is_empty() {
            ("-".to_owned(), "-".to_owned())
        } else {
            (
                dur(Duration::from_nanos(t.latency.value_at_quantile(0.5))),
                dur(Duration::from_nanos(t.latency.value_at_quantile(0.99))),
            )
        };
        table.row([
            kind.name().to_owned(),
            t.sent.to_string(),
            t.complete.to_string(),
            pct(driver::ratio(t.hits, t.sent)),
            t.hung_up.to_string(),
            t.failed().to_string(),
            p50,
            p99,
        ]);
    }
    out.say(table.render());
    let mut failures: BTreeMap<(Kind, Failure), u64> = BTreeMap::new();
    for (kind, t) in all.iter() {
        for (f, n) in &t.failures {
            failures.insert((*kind, *f), *n);
        }
    }
    if failures.is_empty() {
        out.say("Client-visible errors by kind: none.");
    } else {
        let mut t = Table::new(["caller", "what the caller saw", "count"]);
        for ((kind, f), n) in &failures {
            t.row([kind.name().to_owned(), f.name(), n.to_string()]);
        }
        out.say("Client-visible errors by kind:");
        out.say("");
        out.say(t.render());
    }
    let stats = mock.stats();
    let faults: u64 = stats
        .by_status()
        .iter()
        .filter(|(status, _)| **status >= 500)
        .map(|(_, n)| n)
        .sum();
    out.say(format!(
        "Upstream (mock): {} requests ({} streamed), {} answered 5xx by the fault injection \
         ({}), {} connections opened, {} still open after the run (the gateway's idle pool).",
        stats.requests(),
        stats.stream_requests(),
        faults,
        pct(driver::ratio(faults, stats.requests())),
        stats.connections(),
        upstream_open,
    ));
    for (t, text) in events.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        out.say(format!("- t={t:.1} s: {text}"));
    }
    out.say(format!(
        "Redis keys at the end (written again after the restarts): {}.",
        keys.map_or_else(|| "not read".to_owned(), |k| k.to_string())
    ));
    out.say("");

    // RSS over time: one row per minute (or per sample in a short run).
    let every = if duration >= Duration::from_secs(300) {
        60.0
    } else {
        sample_every.as_secs_f64()
    };
    let mut over_time = Table::new([
        "t",
        "VmRSS",
        "open fds",
        "in-flight gauge",
        "detached slots",
        "upstream in flight",
        "requests done",
        "load avg (1 min)",
    ]);
    let mut next_row = 0.0;
    for s in &samples {
        if s.t + 1e-6 >= next_row || std::ptr::eq(s, samples.last().unwrap_or(s)) {
            over_time.row([
                format!("{:.0} s", s.t),
                format!("{:.1} MB", s.rss_kb as f64 / 1024.0),
                s.fds.to_string(),
                gauge_text(s.in_flight),
                gauge_text(s.detached),
                s.upstream_in_flight.to_string(),
                s.done.to_string(),
                format!("{:.2}", s.load1),
            ]);
            next_row = (s.t / every).floor() * every + every;
        }
    }
    out.say(over_time.render());

    let warm = warm_up.as_secs_f64();
    let end = load_stopped.as_secs_f64();
    let window = (60.0f64)
        .min((end - warm) / 5.0)
        .max(sample_every.as_secs_f64());
    let first = mean_mb(&samples, warm, warm + window);
    let last = mean_mb(&samples, end - window, end + 1e-6);
    let after_warm: Vec<f64> = samples
        .iter()
        .filter(|s| s.t >= warm && s.t <= end)
        .map(|s| s.rss_kb as f64 / 1024.0)
        .collect();
    let (lo, hi) = after_warm
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    let slope = slope_mb_per_min(&samples, warm);
    let loads: Vec<f64> = samples.iter().map(|s| s.load1).collect();
    let load_mean = loads.iter().sum::<f64>() / loads.len().max(1) as f64;
    let load_max = loads.iter().copied().fold(0.0, f64::max);
    let max_fds = samples.iter().map(|s| s.fds).max().unwrap_or(0);

    out.say("Summary:");
    match (first, last) {
        (Some(first), Some(last)) => {
            let growth = last - first;
            out.say(format!(
                "- RSS after warm-up: mean {} MB over the {} after warm-up, {} MB over the last {} \
                 of load: growth {}{} MB (min {} / max {} MB after warm-up; least-squares slope \
                 {}{} MB/min). Aim: flat within {FLAT_MB} MB -> {}",
                sig3(first),
                dur(Duration::from_secs_f64(window)),
                sig3(last),
                dur(Duration::from_secs_f64(window)),
                if growth < 0.0 { "-" } else { "+" },
                sig3(growth.abs()),
                sig3(lo),
                sig3(hi),
                if slope < 0.0 { "-" } else { "+" },
                sig3(slope.abs()),
                if growth.abs() <= FLAT_MB {
                    "met"
                } else {
                    "NOT met"
                }
            ));
        }
        _ => out.say("- RSS after warm-up: too few samples (lengthen --duration)."),
    }
    out.say(format!(
        "- RSS: {} MB before the load, {} MB at the end of the load, {} MB after the load \
         clients closed their connections.",
        sig3(before.rss_kb as f64 / 1024.0),
        sig3(after_load.rss_kb as f64 / 1024.0),
        sig3(after_close.rss_kb as f64 / 1024.0),
    ));
    out.say(format!(
        "- Open fds: {} before the load, at most {} during it, {} once it drained, {} after the \
         load clients closed their connections ({} of the gateway's upstream connections to the \
         mock are kept idle, each counted twice: both ends are in this process).",
        before.fds, max_fds, after_load.fds, after_close.fds, upstream_open
    ));
    out.say(format!(
        "- In-flight gauge after the load stopped: {} ({} detached pool slots), {} after the \
         last caller finished. Aim: back to 0 -> {}",
        gauge_text(drained.0),
        gauge_text(drained.1),
        dur(drain_took),
        if drained == (Some(0.0), Some(0.0)) {
            "met"
        } else {
            "NOT met"
        }
    ));
    out.say(format!(
        "- Client-visible errors other than the intended hang-ups: {failed_total} of \
         {sent_total} requests. Aim: 0 -> {}",
        if failed_total == 0 { "met" } else { "NOT met" }
    ));
    out.say(format!(
        "- Load average (1 min) during the run: mean {load_mean:.2}, max {load_max:.2} on this \
         shared 2-core machine (other work may have run at the same time)."
    ));
    out.say("");
    out.write_file(
        opts,
        "soak-rss.svg",
        &rss_chart(
            &samples,
            &events.lock().unwrap_or_else(|e| e.into_inner()),
            warm,
        ),
    );
    gateway.shutdown().await;
    mock.shutdown().await;
    drop(redis);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_unlabelled_gauges_only() {
        let text = "# TYPE holysheep_in_flight_requests gauge\n\
                    holysheep_in_flight_requests 3\n\
                    holysheep_in_flight_requests_total{model=\"x\"} 9\n\
                    holysheep_pool_detached_slots 0\n";
        assert_eq!(
            metric_value(text, "holysheep_in_flight_requests"),
            Some(3.0)
        );
        assert_eq!(
            metric_value(text, "holysheep_pool_detached_slots"),
            Some(0.0)
        );
        assert_eq!(metric_value(text, "holysheep_requests_total"), None);
    }

    #[test]
    fn a_stream_is_complete_only_with_its_end() {
        let request = chat_body(7, 1, true);
        let asked: ChatCompletionRequest = serde_json::from_slice(&request).expect("valid request");
        let text = holysheep_mock::expected_content(&asked);
        let chunk = |content: &str, finish: Option<&str>| {
            let finish = finish.map_or("null".to_owned(), |f| format!("\"{f}\""));
            format!(
                "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\
                 \"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{}}},\
                 \"finish_reason\":{finish}}}]}}\n\n",
                serde_json::Value::String(content.to_owned())
            )
        };
        let (a, b) = text.split_at(text.len() / 2);
        let whole = format!(
            "{}{}data: [DONE]\n\n",
            chunk(a, None),
            chunk(b, Some("stop"))
        );
        assert_eq!(check_answer(&request, whole.as_bytes(), true), Ok(()));
        let cut = format!("{}{}", chunk(a, None), chunk(b, Some("stop")));
        assert_eq!(
            check_answer(&request, cut.as_bytes(), true),
            Err(Failure::IncompleteStream)
        );
        let wrong = format!("{}data: [DONE]\n\n", chunk(a, Some("stop")));
        assert_eq!(
            check_answer(&request, wrong.as_bytes(), true),
            Err(Failure::WrongAnswer)
        );
        assert_eq!(
            check_answer(&request, b"{\"error\":{}}", false),
            Err(Failure::NotACompletion)
        );
    }

    #[test]
    fn rss_trend_and_chart() {
        let samples: Vec<Sample> = (0..=20u32)
            .map(|i| Sample {
                t: f64::from(i) * 6.0,
                rss_kb: 30 * 1024 + u64::from(i) * 1024,
                fds: 20,
                in_flight: Some(0.0),
                detached: None,
                upstream_in_flight: 0,
                load1: 1.0,
                done: 0,
            })
            .collect();
        // 1 MB per 6 s = 10 MB per minute.
        assert!((slope_mb_per_min(&samples, 0.0) - 10.0).abs() < 1e-9);
        assert_eq!(mean_mb(&samples, 0.0, 7.0), Some(30.5));
        assert_eq!(mean_mb(&samples, 500.0, 600.0), None);
        let svg = rss_chart(
            &samples,
            &[(40.0, "killed".into()), (45.0, "back".into())],
            12.0,
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("Redis killed") && svg.contains("Redis back"));
    }
}
