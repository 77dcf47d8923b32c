//! One accepted TCP connection: its socket, and the switch the handler pulls to cut it.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// How a connection is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// Closed with a FIN: what the peer has received stays readable, the rest never comes.
    Close = 1,
    /// Reset with an RST: the peer sees `ECONNRESET`.
    Reset = 2,
}

/// Shared between a connection's task, its requests and their response bodies.
#[derive(Debug)]
pub(crate) struct ConnCtl {
    id: u64,
    used: AtomicBool,
    cut: AtomicU8,
    cut_signal: Notify,
}

impl ConnCtl {
    pub(crate) fn new(id: u64) -> Self {
        Self {
            id,
            used: AtomicBool::new(false),
            cut: AtomicU8::new(0),
            cut_signal: Notify::new(),
        }
    }

    /// The connection's number, 1 for the first the server accepted.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// True for the first request on this connection only.
    pub(crate) fn first_request(&self) -> bool {
        !self.used.swap(true, Ordering::Relaxed)
    }

    /// Asks the connection's task to drop the connection now.
    pub(crate) fn cut(&self, how: Cut) {
        self.cut.store(how as u8, Ordering::Release);
        // `notify_one` keeps a permit when the task is not waiting yet, so no cut is missed.
        self.cut_signal.notify_one();
    }

    /// Resolves once [`cut`](Self::cut) was called.
    pub(crate) async fn cut_requested(&self) {
        self.cut_signal.notified().await;
    }

    fn is_reset(&self) -> bool {
        self.cut.load(Ordering::Acquire) == Cut::Reset as u8
    }
}

/// The TCP stream hyper serves, which turns its close into a reset when the connection was
/// cut with [`Cut::Reset`].
#[derive(Debug)]
pub(crate) struct ConnStream {
    stream: TcpStream,
    ctl: std::sync::Arc<ConnCtl>,
}

impl ConnStream {
    pub(crate) fn new(stream: TcpStream, ctl: std::sync::Arc<ConnCtl>) -> Self {
        Self { stream, ctl }
    }
}

impl Drop for ConnStream {
    fn drop(&mut self) {
        if self.ctl.is_reset() {
            // A zero linger makes the close send RST instead of FIN. With a zero timeout the
            // close never blocks, which is what the deprecation warns about; `set_zero_linger`
            // would say the same but needs a newer tokio than the workspace asks for.
            #[allow(deprecated)]
            let _ = self.stream.set_linger(Some(Duration::ZERO));
        }
    }
}

impl AsyncRead for ConnStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
