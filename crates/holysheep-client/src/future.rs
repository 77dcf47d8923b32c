//! The response future of [`HolySheepClient`](crate::HolySheepClient).

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use holysheep_core::hop_by_hop::remove_hop_by_hop;
use http::Response;
use hyper_util::client::legacy;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::{Error, ResponseBody};

pin_project! {
    /// The future returned by [`HolySheepClient`](crate::HolySheepClient)'s `call`.
    ///
    /// Resolves when the upstream's response headers arrive, or fails with a timeout
    /// [`Error`] when the headers deadline ([`Builder::timeout`](crate::Builder::timeout))
    /// passes first. The deadline counts from `call`.
    pub struct ResponseFuture {
        #[pin]
        state: State,
    }
}

pin_project! {
    #[project = StateProj]
    enum State {
        Waiting {
            inner: legacy::ResponseFuture,
            // Created on first poll so `call` works outside a runtime's timer context.
            #[pin]
            deadline: Option<Sleep>,
            started: Instant,
            timeout: Duration,
            read_timeout: Duration,
        },
        Failed {
            error: Option<Error>,
        },
    }
}

impl ResponseFuture {
    pub(crate) fn new(
        inner: legacy::ResponseFuture,
        timeout: Duration,
        read_timeout: Duration,
    ) -> Self {
        Self {
            state: State::Waiting {
                inner,
                deadline: None,
                started: Instant::now(),
                timeout,
                read_timeout,
            },
        }
    }

    pub(crate) fn failed(error: Error) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<ResponseBody>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Waiting {
                inner,
                mut deadline,
                started,
                timeout,
                read_timeout,
            } => {
                if let Poll::Ready(result) = Pin::new(inner).poll(cx) {
                    return Poll::Ready(match result {
                        Ok(mut response) => {
                            // They describe the pooled connection, which is the client's own.
                            remove_hop_by_hop(response.headers_mut());
                            let read_timeout = *read_timeout;
                            Ok(response.map(|body| ResponseBody::new(body, read_timeout)))
                        }
                        Err(error) => {
                            let error = Error::from_client(error);
                            tracing::debug!(%error, "upstream call failed");
                            Err(error)
                        }
                    });
                }
                if deadline.is_none() {
                    deadline.set(Some(tokio::time::sleep_until(*started + *timeout)));
                }
                let elapsed = deadline
                    .as_pin_mut()
                    .is_some_and(|sleep| sleep.poll(cx).is_ready());
                if elapsed {
                    tracing::debug!(?timeout, "upstream response headers deadline passed");
                    return Poll::Ready(Err(Error::headers_timeout(*timeout)));
                }
                Poll::Pending
            }
            StateProj::Failed { error } => match error.take() {
                Some(error) => Poll::Ready(Err(error)),
                None => Poll::Ready(Err(Error::request(std::io::Error::other(
                    "response future polled after completion",
                )))),
            },
        }
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
