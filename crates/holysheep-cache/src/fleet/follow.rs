//! The remote follower's side: the leader's live stream read with `XREAD BLOCK`, on a
//! connection of its own.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use holysheep_core::BoxError;
use http::{HeaderMap, StatusCode};
use http_body::Frame;
use http_body_util::StreamBody;
use http_body_util::combinators::UnsyncBoxBody;
use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::sync::OwnedSemaphorePermit;

use super::lead::{Lease, Mirror};
use super::record::{Ending, Record, parse_xread};
use super::{Fleet, Names, Role, names};
use crate::flight::Shape;
use crate::key::CacheKey;
use crate::shared::lock;

/// Entries read per `XREAD`.
const COUNT: usize = 512;
/// Idle dedicated connections kept per node.
const IDLE_PER_NODE: usize = 32;
/// How often a follower may find its leader gone and ask the lease again before it calls
/// upstream itself.
const MAX_CLAIMS: u32 = 2;

/// What a remote follower ends up with.
pub(crate) enum Followed {
    /// The leader's response, to replay: head now, body read live.
    Live {
        status: StatusCode,
        headers: HeaderMap,
        body: UnsyncBoxBody<Bytes, BoxError>,
    },
    /// The leader's answer (in another shape) is stored: serve it from the entry.
    Stored,
    /// The lease was free again (the leader failed or died): this instance leads now.
    TakeOver(Mirror, Lease),
    /// Follow nobody: call upstream, coalescing locally only.
    Alone,
}

/// A request whose key another instance leads.
pub(crate) struct Remote {
    fleet: Arc<Fleet>,
    key: CacheKey,
    names: Names,
    holder: String,
    started: Instant,
}

impl Remote {
    pub(super) fn new(fleet: Arc<Fleet>, key: CacheKey, names: Names, holder: String) -> Self {
        Self {
            fleet,
            key,
            names,
            holder,
            started: Instant::now(),
        }
    }

    /// Follows the leader until its answer can be served in `shape`, it is stored, this
    /// instance takes the lease over, or there is nobody (or no way) to follow.
    pub(crate) async fn follow(mut self, shape: Shape, max_bytes: usize) -> Followed {
        let deadline = self.started + self.fleet.max_wait;
        let mut claims = 0;
        loop {
            match self.follow_holder(shape, deadline).await {
                Step::Done(followed) => {
                    if matches!(followed, Followed::Live { .. } | Followed::Stored) {
                        metrics::histogram!(names::WAIT_SECONDS)
                            .record(self.started.elapsed().as_secs_f64());
                    }
                    return followed;
                }
                Step::Alone(reason, error) => {
                    self.fleet.local_only(reason, &error);
                    return Followed::Alone;
                }
                Step::LeaderGone => {}
            }
            claims += 1;
            if claims > MAX_CLAIMS || Instant::now() >= deadline {
                return Followed::Alone;
            }
            match self.fleet.claim_again(&self.key, max_bytes).await {
                Role::Leader(mirror, lease) => {
                    metrics::counter!(names::TAKEOVERS).increment(1);
                    return Followed::TakeOver(mirror, lease);
                }
                Role::Follower(next) => self.holder = next.holder,
                Role::Stored => return Followed::Stored,
                Role::Local => return Followed::Alone,
            }
        }
    }

    async fn follow_holder(&self, shape: Shape, deadline: Instant) -> Step {
        let Some(reader) = self.fleet.reader(&self.names.lease).await else {
            return Step::Alone("reader", "no connection for a blocking read".into());
        };
        let mut tail = Tail {
            fleet: Arc::clone(&self.fleet),
            reader,
            stream: self.names.stream(&self.holder),
            lease: self.names.lease.clone(),
            holder: self.holder.clone(),
            last: "0-0".to_owned(),
        };
        let mut before_head: VecDeque<Bytes> = VecDeque::new();
        let mut wants_entry = false;
        let mut ended_ok = false;
        loop {
            let records = match tail.next(Some(deadline)).await {
                Ok(records) => records,
                Err(TailError::Gone) => return Step::LeaderGone,
                Err(TailError::Deadline) => {
                    return Step::Alone(
                        "max_wait",
                        "the fleet leader did not answer in time".into(),
                    );
                }
                Err(TailError::Redis(error)) => return Step::Alone("follow", error),
            };
            let mut records = records.into_iter();
            while let Some(record) = records.next() {
                match record {
                    Record::Head {
                        status,
                        headers,
                        shape: leader,
                    } => {
                        // An error answer is shape-free: shared as it is.
                        if status != StatusCode::OK || shape.replays(leader) {
                            let mut pending = before_head;
                            let mut end = None;
                            for record in records.by_ref() {
                                if end.is_some() {
                                    break;
                                }
                                take(record, &mut pending, &mut end);
                            }
                            return Step::Done(Followed::Live {
                                status,
                                headers,
                                body: tail.into_body(pending, end),
                            });
                        }
                        wants_entry = true;
                        before_head.clear();
                    }
                    Record::Chunk(chunk) => {
                        if !wants_entry {
                            before_head.push_back(chunk);
                        }
                    }
                    Record::End(Ending::Ok) if wants_entry => ended_ok = true,
                    Record::End(_) => return Step::LeaderGone,
                    Record::Released if ended_ok => return Step::Done(Followed::Stored),
                    Record::Released => {}
                    Record::Invalid => {
                        return Step::Alone("invalid", "the fleet stream holds garbage".into());
                    }
                }
            }
        }
    }
}

enum Step {
    Done(Followed),
    LeaderGone,
    Alone(&'static str, BoxError),
}

/// Files a record read after the head into the body's pending chunks or its end.
fn take(record: Record, pending: &mut VecDeque<Bytes>, end: &mut Option<Result<(), BoxError>>) {
    match record {
        Record::Chunk(chunk) => pending.push_back(chunk),
        Record::End(Ending::Ok) => *end = Some(Ok(())),
        Record::End(ending) => {
            *end = Some(Err(format!(
                "the fleet leader's answer did not end well ({})",
                ending.as_str()
            )
            .into()));
        }
        Record::Released => {}
        Record::Head { .. } | Record::Invalid => {
            *end = Some(Err("the fleet stream holds garbage".into()));
        }
    }
}

enum TailError {
    /// The lease is gone or held by another, with nothing more in the stream.
    Gone,
    Deadline,
    Redis(BoxError),
}

/// A reader of one leader's stream.
struct Tail {
    fleet: Arc<Fleet>,
    reader: Reader,
    stream: String,
    lease: String,
    holder: String,
    last: String,
}

impl Tail {
    /// The next records: waits for some, checking the lease whenever a wait brings none.
    async fn next(&mut self, deadline: Option<Instant>) -> Result<Vec<Record>, TailError> {
        loop {
            let mut block = self.fleet.lease / 2;
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(TailError::Deadline);
                }
                block = block.min(left);
            }
            let records = self.read(Some(block)).await?;
            if !records.is_empty() {
                return Ok(records);
            }
            let mut get = redis::cmd("GET");
            get.arg(&self.lease);
            let holder: Option<String> = self
                .fleet
                .store
                .run_cmd(&self.lease, get)
                .await
                .map_err(|e| TailError::Redis(e.into()))?;
            if holder.as_deref() == Some(self.holder.as_str()) {
                continue;
            }
            // Let go or lapsed: whatever the leader wrote before that is in the stream already.
            let records = self.read(None).await?;
            if records.is_empty() {
                return Err(TailError::Gone);
            }
            return Ok(records);
        }
    }

    async fn read(&mut self, block: Option<Duration>) -> Result<Vec<Record>, TailError> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(COUNT);
        let bound = match block {
            Some(block) => {
                let ms = u64::try_from(block.as_millis()).unwrap_or(u64::MAX).max(1);
                cmd.arg("BLOCK").arg(ms);
                block + self.fleet.store.op_timeout()
            }
            None => self.fleet.store.op_timeout(),
        };
        cmd.arg("STREAMS").arg(&self.stream).arg(&self.last);
        // Unclean until the reply is in: a read dropped midway leaves its reply pending on
        // the connection, which must not go back to the pool.
        self.reader.clean = false;
        let reply = tokio::time::timeout(bound, cmd.query_async::<Value>(&mut self.reader.conn));
        let reply = match reply.await {
            Ok(Ok(reply)) => {
                self.reader.clean = true;
                reply
            }
            Ok(Err(error)) => return Err(TailError::Redis(error.into())),
            Err(_) => return Err(TailError::Redis("a fleet stream read timed out".into())),
        };
        let Some(entries) = parse_xread(&reply) else {
            return Err(TailError::Redis("not an XREAD reply".into()));
        };
        if let Some((id, _)) = entries.last() {
            self.last.clone_from(id);
        }
        Ok(entries.into_iter().map(|(_, record)| record).collect())
    }

    /// The rest of the leader's body: `pending` first, then read live.
    fn into_body(
        self,
        pending: VecDeque<Bytes>,
        end: Option<Result<(), BoxError>>,
    ) -> UnsyncBoxBody<Bytes, BoxError> {
        let state = BodyState {
            tail: self,
            pending,
            end,
        };
        let stream = futures_util::stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            loop {
                if let Some(chunk) = state.pending.pop_front() {
                    return Some((Ok(Frame::data(chunk)), Some(state)));
                }
                match state.end.take() {
                    Some(Ok(())) => return None,
                    Some(Err(error)) => return Some((Err(error), None)),
                    None => {}
                }
                match state.tail.next(None).await {
                    Ok(records) => {
                        for record in records {
                            if state.end.is_some() {
                                break;
                            }
                            take(record, &mut state.pending, &mut state.end);
                        }
                    }
                    Err(TailError::Gone) => {
                        let error: BoxError = "the fleet leader went away mid-answer".into();
                        return Some((Err(error), None));
                    }
                    Err(TailError::Deadline) => return None,
                    Err(TailError::Redis(error)) => return Some((Err(error), None)),
                }
            }
        });
        UnsyncBoxBody::new(StreamBody::new(stream))
    }
}

struct BodyState {
    tail: Tail,
    pending: VecDeque<Bytes>,
    end: Option<Result<(), BoxError>>,
}

/// Idle dedicated connections, per node address.
#[derive(Default)]
pub(super) struct Pool {
    idle: Mutex<HashMap<String, Vec<MultiplexedConnection>>>,
}

/// A dedicated connection, back in the pool when dropped after clean use.
struct Reader {
    conn: MultiplexedConnection,
    addr: String,
    fleet: Arc<Fleet>,
    clean: bool,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Reader {
    fn drop(&mut self) {
        if self.clean {
            let mut idle = lock(&self.fleet.pool.idle);
            let conns = idle.entry(std::mem::take(&mut self.addr)).or_default();
            if conns.len() < IDLE_PER_NODE {
                conns.push(self.conn.clone());
            }
        }
    }
}

impl Fleet {
    /// A connection of its own to the node that holds `key`: `None` when this instance has as
    /// many readers as allowed, or the node cannot be reached.
    async fn reader(self: &Arc<Self>, key: &str) -> Option<Reader> {
        let permit = Arc::clone(&self.readers).try_acquire_owned().ok()?;
        let info = self.store.node_info(key)?;
        let addr = info.addr().to_string();
        let pooled = lock(&self.pool.idle).get_mut(&addr).and_then(Vec::pop);
        let conn = match pooled {
            Some(conn) => conn,
            None => {
                let client = redis::Client::open(info).ok()?;
                let bound = (self.store.op_timeout() * 4).max(Duration::from_millis(200));
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(bound))
                    .set_response_timeout(None);
                let connect = client.get_multiplexed_async_connection_with_config(&config);
                match tokio::time::timeout(bound, connect).await {
                    Ok(Ok(conn)) => conn,
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "fleet reader connection failed");
                        return None;
                    }
                    Err(_) => return None,
                }
            }
        };
        Some(Reader {
            conn,
            addr,
            fleet: Arc::clone(self),
            clean: true,
            _permit: permit,
        })
    }
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote")
            .field("key", &self.key)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}
