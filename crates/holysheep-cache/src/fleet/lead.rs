//! The fleet leader's side: the answer mirrored into a live stream, the lease renewed and
//! released.
//!
//! The local [`Lead`](crate::flight::Lead) holds a [`Mirror`] and hands it each event of the
//! answer; its registration holds the [`Lease`]. Both only queue events for one writer task per
//! leader, so the answer's path never waits for Redis. The writer appends the events in order
//! (a pipeline per batch), renews the lease every third of its life, and releases it once the
//! answer has ended *and* the lease is let go (the entry stored, or the flight unregistered),
//! whichever comes last — so an error answer is still replayed to the followers waiting for it.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use tokio::sync::mpsc;

use super::record::{Ending, head_fields};
use super::{Fleet, Names, millis};
use crate::flight::Shape;

/// Events queued per batch at most.
const BATCH: usize = 256;

enum Event {
    Head(StatusCode, HeaderMap, Shape),
    Chunk(Bytes),
    End(Ending),
    Release,
}

/// Mirrors a leader's answer into its live stream. Dropped before its end: `abandoned`.
pub(crate) struct Mirror {
    tx: mpsc::UnboundedSender<Event>,
    sent: usize,
    max_bytes: usize,
    ended: bool,
}

/// The lease, released (after the answer's end) when dropped.
pub(crate) struct Lease {
    tx: mpsc::UnboundedSender<Event>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = self.tx.send(Event::Release);
    }
}

impl Mirror {
    pub(crate) fn head(&mut self, status: StatusCode, headers: &HeaderMap, shape: Shape) {
        if !self.ended {
            let _ = self.tx.send(Event::Head(status, headers.clone(), shape));
        }
    }

    /// A body chunk; past the entry bound, the mirror stops with `cut`.
    pub(crate) fn chunk(&mut self, chunk: &Bytes) {
        if self.ended {
            return;
        }
        self.sent += chunk.len();
        if self.sent > self.max_bytes {
            self.end(Ending::Cut);
        } else {
            let _ = self.tx.send(Event::Chunk(chunk.clone()));
        }
    }

    pub(crate) fn end(&mut self, ending: Ending) {
        if !self.ended {
            self.ended = true;
            let _ = self.tx.send(Event::End(ending));
        }
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.end(Ending::Abandoned);
    }
}

/// Starts the writer of a lease just taken.
pub(super) fn start(
    fleet: Arc<Fleet>,
    names: Names,
    token: String,
    max_bytes: usize,
) -> (Mirror, Lease) {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(write(fleet, names, token, rx));
    (
        Mirror {
            tx: tx.clone(),
            sent: 0,
            max_bytes,
            ended: false,
        },
        Lease { tx },
    )
}

const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";

const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
return redis.call('DEL', KEYS[1]) else return 0 end";

async fn write(
    fleet: Arc<Fleet>,
    names: Names,
    token: String,
    mut rx: mpsc::UnboundedReceiver<Event>,
) {
    let stream = names.stream(&token);
    let mut renew = tokio::time::interval(fleet.lease / 3);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    renew.tick().await;
    // Once a write failed, nothing more is mirrored: followers see the lease lapse.
    let mut broken = false;
    let mut ended = false;
    let mut let_go = false;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    // Mirror and lease both gone.
                    ended = true;
                    let_go = true;
                }
                let mut pipe = redis::pipe();
                for event in batch.drain(..) {
                    let mut xadd = redis::cmd("XADD");
                    xadd.arg(&stream).arg("*");
                    match event {
                        Event::Head(status, headers, shape) => {
                            for (k, v) in head_fields(status, &headers, shape) {
                                xadd.arg(k).arg(v);
                            }
                        }
                        Event::Chunk(chunk) => {
                            xadd.arg("k").arg("c").arg("d").arg(&chunk[..]);
                        }
                        Event::End(ending) => {
                            ended = true;
                            xadd.arg("k").arg("e").arg("e").arg(ending.as_str());
                        }
                        Event::Release => {
                            let_go = true;
                            continue;
                        }
                    }
                    pipe.add_command(xadd).ignore();
                }
                let done = ended && let_go;
                if done {
                    pipe.cmd("XADD").arg(&stream).arg("*").arg("k").arg("r").ignore();
                }
                let expire = if done { fleet.linger } else { fleet.linger + fleet.lease };
                pipe.cmd("PEXPIRE").arg(&stream).arg(millis(expire)).ignore();
                if done {
                    pipe.cmd("EVAL").arg(RELEASE).arg(1).arg(&names.lease).arg(&token).ignore();
                }
                if !broken || done {
                    if broken {
                        // Only let the lease go: the stream is not to be trusted.
                        pipe = redis::pipe();
                        pipe.cmd("EVAL").arg(RELEASE).arg(1).arg(&names.lease).arg(&token).ignore();
                    }
                    if let Err(error) = fleet.store.run_pipe::<()>(&names.lease, pipe).await {
                        broken = true;
                        fleet.local_only("mirror", &error);
                    }
                }
                if done {
                    return;
                }
            }
            _ = renew.tick(), if !broken => {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(RENEW).arg(1).arg(&names.lease).arg(&token).arg(millis(fleet.lease));
                match fleet.store.run_cmd::<i64>(&names.lease, cmd).await {
                    Ok(1) => {}
                    // Taken over (this leader was too slow to renew): stop mirroring.
                    Ok(_) => broken = true,
                    Err(error) => tracing::debug!(%error, "fleet lease renewal failed"),
                }
            }
        }
    }
}
