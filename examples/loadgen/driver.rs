//! The two load shapes and what they record.
//!
//! - **Closed loop**: `c` workers, each sends its next request when the last one answered. It
//!   measures throughput at a fixed concurrency; its latencies understate the tail under
//!   overload (a slow answer also delays the requests that would have been sent meanwhile).
//! - **Open loop**: request `i` is due at `start + i / rate`, whatever happened before, and its
//!   latency counts from that *scheduled* time, so a stall shows as the latency of every request
//!   it delayed (no coordinated omission). The time from the actual send is kept beside it.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use holysheep_core::price::PriceTable;
use serde::Deserialize;
use tokio::time::Instant;

use crate::system;
use crate::workload::{RepeatCounter, Workload};

/// At most this many open-loop requests in flight; past it a due request is counted as
/// dropped (an error) instead of piling up without bound.
const MAX_OPEN_IN_FLIGHT: u64 = 8192;

/// What one request came back as.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// The HTTP status, `None` when the call failed without an answer.
    pub(crate) status: Option<u16>,
    /// `x-cache: HIT`.
    pub(crate) hit: bool,
    /// The answer's id, model and tokens, when asked to parse and the body was a completion.
    pub(crate) answer: Option<Answer>,
}

impl Outcome {
    /// A success is a `200` with a body read to the end.
    pub(crate) fn ok(&self) -> bool {
        self.status == Some(200)
    }
}

/// The billable part of a completion.
#[derive(Debug, Deserialize)]
pub(crate) struct Answer {
    /// The upstream's completion id: a new id means a new upstream call.
    pub(crate) id: String,
    /// The model that answered.
    pub(crate) model: String,
    /// Its token counts.
    pub(crate) usage: Usage,
}

/// Token counts of one answer.
#[derive(Debug, Deserialize)]
pub(crate) struct Usage {
    /// Prompt tokens.
    pub(crate) prompt_tokens: u64,
    /// Completion tokens.
    pub(crate) completion_tokens: u64,
}

/// One way of sending a chat request: a naive client, the in-process stack, a pooled HTTP
/// client to the mock or to the gateway.
pub(crate) trait Target: Send + Sync + 'static {
    /// Sends `body` as `POST /chat/completions` and reads the answer to its end; parses the
    /// answer when `parse` is set.
    fn call(&self, body: Bytes, parse: bool) -> Pin<Box<dyn Future<Output = Outcome> + Send>>;
}

/// Histograms and counters of one run.
pub(crate) struct Recorder {
    /// Latency in nanoseconds: from the scheduled send in the open loop, from the send in the
    /// closed loop.
    pub(crate) latency: Histogram<u64>,
    /// Open loop only: from the actual send (service time), for comparison.
    pub(crate) service: Histogram<u64>,
    /// Successful answers.
    pub(crate) ok: u64,
    /// Errors (non-200, failed calls, dropped requests).
    pub(crate) errors: u64,
    /// Open-loop requests dropped because too many were in flight.
    pub(crate) dropped: u64,
    /// Answers marked `x-cache: HIT`.
    pub(crate) hits: u64,
    /// Answers by status (`0` for a failed call).
    pub(crate) statuses: BTreeMap<u16, u64>,
    /// Requests that took 35–45 ms (the Nagle / delayed-ACK signature).
    pub(crate) band_35_45ms: u64,
    /// Prompts sent, for the measured repeat share.
    pub(crate) repeats: RepeatCounter,
    /// Completion ids seen: an id seen before came from a cache, not the upstream.
    ids: HashSet<String>,
    /// Dollars of answers that came from the upstream (first sight of their id).
    pub(crate) dollars: f64,
    /// Upstream answers by id (distinct ids).
    pub(crate) upstream_answers: u64,
    /// Wall time of the run.
    pub(crate) elapsed: Duration,
    /// Largest VmRSS seen during the run, in kB.
    pub(crate) max_rss_kb: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

/// An empty latency histogram: 1 ns .. 10 min at 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("static histogram bounds are valid")
}

impl Recorder {
    /// Empty.
    pub(crate) fn new() -> Self {
        Recorder {
            latency: histogram(),
            service: histogram(),
            ok: 0,
            errors: 0,
            dropped: 0,
            hits: 0,
            statuses: BTreeMap::new(),
            band_35_45ms: 0,
            repeats: RepeatCounter::default(),
            ids: HashSet::new(),
            dollars: 0.0,
            upstream_answers: 0,
            elapsed: Duration::ZERO,
            max_rss_kb: 0,
        }
    }

    /// Records one finished request.
    pub(crate) fn record(
        &mut self,
        prompt: u64,
        latency: Duration,
        service: Option<Duration>,
        outcome: Outcome,
        prices: &PriceTable,
    ) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency.saturating_record(nanos.max(1));
        if let Some(service) = service {
            let nanos = u64::try_from(service.as_nanos()).unwrap_or(u64::MAX);
            self.service.saturating_record(nanos.max(1));
        }
        if (35_000_000..=45_000_000).contains(&nanos) {
            self.band_35_45ms += 1;
        }
        self.repeats.note(prompt);
        *self
            .statuses
            .entry(outcome.status.unwrap_or(0))
            .or_default() += 1;
        if outcome.ok() {
            self.ok += 1;
        } else {
            self.errors += 1;
        }
        if outcome.hit {
            self.hits += 1;
        }
        if let Some(answer) = outcome.answer
            && outcome.status == Some(200)
        {
            let cost = prices.cost(
                &answer.model,
                answer.usage.prompt_tokens,
                answer.usage.completion_tokens,
            );
            if self.ids.insert(answer.id) {
                self.upstream_answers += 1;
                self.dollars += cost.unwrap_or(0.0);
            }
        }
    }

    /// Requests recorded (answered or failed; dropped ones included).
    pub(crate) fn total(&self) -> u64 {
        self.ok + self.errors
    }

    /// Error share of all requests.
    pub(crate) fn error_rate(&self) -> f64 {
        ratio(self.errors, self.total())
    }

    /// Hit share of all requests.
    pub(crate) fn hit_rate(&self) -> f64 {
        ratio(self.hits, self.total())
    }

    /// Completed requests per second of wall time.
    pub(crate) fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.total() as f64 / secs
        } else {
            0.0
        }
    }

    /// Latency at quantile `q` (0..=1).
    pub(crate) fn at(&self, q: f64) -> Duration {
        Duration::from_nanos(self.latency.value_at_quantile(q))
    }

    /// Adds another run's counts (for repeated segments of one configuration).
    /// `200 x 812, 502 x 3`: the answers by status (`0`: no answer).
    pub(crate) fn statuses_line(&self) -> String {
        self.statuses
            .iter()
            .map(|(status, n)| format!("{status} x {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub(crate) fn merge(&mut self, other: &Recorder) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.service.add(&other.service);
        self.ok += other.ok;
        self.errors += other.errors;
        self.dropped += other.dropped;
        self.hits += other.hits;
        for (status, n) in &other.statuses {
            *self.statuses.entry(*status).or_default() += n;
        }
        self.band_35_45ms += other.band_35_45ms;
        self.dollars += other.dollars;
        self.upstream_answers += other.upstream_answers;
        self.elapsed += other.elapsed;
        self.max_rss_kb = self.max_rss_kb.max(other.max_rss_kb);
    }
}

/// `a / b`, 0 when `b` is 0.
pub(crate) fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn lock(recorder: &Mutex<Recorder>) -> MutexGuard<'_, Recorder> {
    recorder.lock().unwrap_or_else(|e| e.into_inner())
}

/// Everything a run needs besides its shape.
pub(crate) struct Run {
    /// Shown in the progress line.
    pub(crate) label: String,
    /// What is called.
    pub(crate) target: Arc<dyn Target>,
    /// What is asked.
    pub(crate) workload: Workload,
    /// How long requests are started.
    pub(crate) duration: Duration,
    /// Parse answers for ids and tokens (cost accounting).
    pub(crate) parse: bool,
    /// Print a progress line once a second.
    pub(crate) progress: bool,
}

/// Live counters for the progress line.
#[derive(Default)]
struct Live {
    sent: AtomicU64,
    done: AtomicU64,
    errors: AtomicU64,
    in_flight: AtomicU64,
    max_rss_kb: AtomicU64,
}

/// Prints `label t=.. sent=.. done=.. err=.. in-flight=.. rps=.. rss=..` to stderr once a
/// second (and samples VmRSS) until `stop` is set.
fn spawn_progress(
    label: String,
    live: Arc<Live>,
    stop: Arc<AtomicBool>,
    print: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.tick().await;
        let mut last_done = 0;
        while !stop.load(Ordering::Relaxed) {
            ticker.tick().await;
            let rss = system::rss_kb().unwrap_or(0);
            live.max_rss_kb.fetch_max(rss, Ordering::Relaxed);
            if print {
                let done = live.done.load(Ordering::Relaxed);
                eprintln!(
                    "  [{label}] t={:>3}s sent={} done={} err={} in-flight={} rps={} rss={} MB",
                    start.elapsed().as_secs(),
                    live.sent.load(Ordering::Relaxed),
                    done,
                    live.errors.load(Ordering::Relaxed),
                    live.in_flight.load(Ordering::Relaxed),
                    done - last_done,
                    rss / 1024,
                );
                last_done = done;
            }
        }
    })
}

/// Runs `concurrency` workers for `run.duration`, each sending its next request as soon as
/// the last one answered.
pub(crate) async fn closed_loop(run: Run, concurrency: usize, prices: &PriceTable) -> Recorder {
    let recorder = Arc::new(Mutex::new(Recorder::new()));
    let live = Arc::new(Live::default());
    let stop = Arc::new(AtomicBool::new(false));
    let progress = spawn_progress(run.label.clone(), live.clone(), stop.clone(), run.progress);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + run.duration;
    let workload = Arc::new(run.workload);

    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.max(1) {
        let (target, workload, next, live, recorder) = (
            run.target.clone(),
            workload.clone(),
            next.clone(),
            live.clone(),
            recorder.clone(),
        );
        let prices = prices.clone();
        let parse = run.parse;
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let (prompt, body) = workload.request(index);
                live.sent.fetch_add(1, Ordering::Relaxed);
                let sent = Instant::now();
                let outcome = target.call(body, parse).await;
                let latency = sent.elapsed();
                live.done.fetch_add(1, Ordering::Relaxed);
                if !outcome.ok() {
                    live.errors.fetch_add(1, Ordering::Relaxed);
                }
                lock(&recorder).record(prompt, latency, None, outcome, &prices);
            }
        }));
    }
    for worker in workers {
        let _ = worker.await;
    }
    finish(recorder, start, &live, stop, progress).await
}

/// Sends request `i` at `start + i / rate` for `run.duration`, each on its own task; latency
/// counts from the scheduled time.
pub(crate) async fn open_loop(run: Run, rate: f64, prices: &PriceTable) -> Recorder {
    let recorder = Arc::new(Mutex::new(Recorder::new()));
    let live = Arc::new(Live::default());
    let stop = Arc::new(AtomicBool::new(false));
    let progress = spawn_progress(run.label.clone(), live.clone(), stop.clone(), run.progress);
    let interval = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let total = (run.duration.as_secs_f64() * rate).floor() as u64;
    let workload = Arc::new(run.workload);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();

    for index in 0..total {
        let due = start + interval.mul_f64(index as f64);
        pace(due).await;
        // Reap finished tasks so the set does not grow with the run.
        while tasks.try_join_next().is_some() {}
        let (prompt, body) = workload.request(index);
        live.sent.fetch_add(1, Ordering::Relaxed);
        if live.in_flight.load(Ordering::Relaxed) >= MAX_OPEN_IN_FLIGHT {
            let mut r = lock(&recorder);
            r.dropped += 1;
            r.record(prompt, due.elapsed(), None, Outcome::default(), prices);
            continue;
        }
        live.in_flight.fetch_add(1, Ordering::Relaxed);
        let (target, live, recorder) = (run.target.clone(), live.clone(), recorder.clone());
        let prices = prices.clone();
        let parse = run.parse;
        tasks.spawn(async move {
            let sent = Instant::now();
            let outcome = target.call(body, parse).await;
            let end = Instant::now();
            live.in_flight.fetch_sub(1, Ordering::Relaxed);
            live.done.fetch_add(1, Ordering::Relaxed);
            if !outcome.ok() {
                live.errors.fetch_add(1, Ordering::Relaxed);
            }
            lock(&recorder).record(prompt, end - due, Some(end - sent), outcome, &prices);
        });
    }
    while tasks.join_next().await.is_some() {}
    finish(recorder, start, &live, stop, progress).await
}

/// Waits until `due`. Tokio's timer ticks in whole milliseconds, which would add up to a
/// millisecond of the harness's own lateness to every open-loop latency; so sleep to a
/// millisecond before and yield from there (other tasks keep running meanwhile).
async fn pace(due: Instant) {
    const SPIN: Duration = Duration::from_millis(1);
    if due.saturating_duration_since(Instant::now()) > SPIN {
        tokio::time::sleep_until(due - SPIN).await;
    }
    while Instant::now() < due {
        tokio::task::yield_now().await;
    }
}

async fn finish(
    recorder: Arc<Mutex<Recorder>>,
    start: Instant,
    live: &Live,
    stop: Arc<AtomicBool>,
    progress: tokio::task::JoinHandle<()>,
) -> Recorder {
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = progress.await;
    let mut recorder = lock(&recorder);
    let mut out = std::mem::take(&mut *recorder);
    out.elapsed = elapsed;
    out.max_rss_kb = live
        .max_rss_kb
        .load(Ordering::Relaxed)
        .max(system::rss_kb().unwrap_or(0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;

    impl Target for Fixed {
        fn call(&self, body: Bytes, _parse: bool) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(40)).await;
                // Every tenth prompt "fails".
                let fail = body.len().is_multiple_of(10);
                Outcome {
                    status: Some(if fail { 503 } else { 200 }),
                    hit: false,
                    answer: None,
                }
            })
        }
    }

    #[test]
    fn recorder_counts_cost_once_per_upstream_answer() {
        let prices = PriceTable::default();
        let mut r = Recorder::new();
        let answer = |id: &str| Answer {
            id: id.to_owned(),
            model: "gpt-4.1".to_owned(),
            usage: Usage {
                prompt_tokens: 1_000_000,
                completion_tokens: 0,
            },
        };
        let ok = |id: &str, hit: bool| Outcome {
            status: Some(200),
            hit,
            answer: Some(answer(id)),
        };
        r.record(1, Duration::from_millis(40), None, ok("a", false), &prices);
        r.record(1, Duration::from_millis(1), None, ok("a", true), &prices);
        r.record(2, Duration::from_millis(2), None, ok("b", false), &prices);
        r.record(
            3,
            Duration::from_millis(2),
            None,
            Outcome::default(),
            &prices,
        );
        assert_eq!(r.total(), 4);
        assert_eq!(r.errors, 1);
        assert_eq!(r.hits, 1);
        assert_eq!(r.upstream_answers, 2);
        let one_million_gpt41 = prices.cost("gpt-4.1", 1_000_000, 0).unwrap_or(0.0);
        assert!(one_million_gpt41 > 0.0);
        assert!((r.dollars - 2.0 * one_million_gpt41).abs() < 1e-9);
        assert_eq!(r.band_35_45ms, 1);
        assert!((r.repeats.share() - 0.25).abs() < 1e-9);
        assert_eq!(r.statuses.get(&0), Some(&1));
    }

    // Real time (tokio's paused clock needs the `test-util` feature the root package lacks), so
    // these assert bounds that hold however slow the machine is, not speeds.
    #[tokio::test]
    async fn open_loop_sends_on_schedule_and_counts_from_it() {
        let prices = PriceTable::default();
        let run = Run {
            label: "t".into(),
            target: Arc::new(Fixed),
            workload: Workload::new(crate::workload::Prompts::Unique, 1),
            duration: Duration::from_millis(300),
            parse: false,
            progress: false,
        };
        let r = open_loop(run, 100.0, &prices).await;
        // Exactly rate x duration requests, whatever the latency.
        assert_eq!(r.total(), 30);
        // Each call takes at least 40 ms, and latency from the schedule is never below the
        // time from the send.
        assert!(r.latency.min() >= 40_000_000);
        assert!(r.latency.max() >= r.service.max());
        assert_eq!(r.service.len(), 30);
    }

    #[tokio::test]
    async fn closed_loop_is_bounded_by_concurrency_over_latency() {
        let prices = PriceTable::default();
        let run = Run {
            label: "t".into(),
            target: Arc::new(Fixed),
            workload: Workload::new(crate::workload::Prompts::Unique, 1),
            duration: Duration::from_millis(400),
            parse: false,
            progress: false,
        };
        let r = closed_loop(run, 4, &prices).await;
        // Each of 4 workers completes at most 400/40 + 1 calls (the last may start just
        // before the deadline) and at least one.
        assert!((4..=44).contains(&r.total()), "{}", r.total());
        assert!(r.latency.min() >= 40_000_000);
        assert_eq!(r.service.len(), 0);
    }
}
