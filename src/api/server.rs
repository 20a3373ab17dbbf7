//! The HTTP server behind the one listener: HTTP/1.1 and HTTP/2 (prior knowledge, as gRPC
//! clients speak it) on every connection, serving the router of REST, SSE, gRPC and grpc-web.
//!
//! A connection's HTTP/2 streams run inside the connection's own task (`ConnectionStreams`), not
//! one task each. An event published to a run with thousands of subscribers then costs a wake-up
//! per connection rather than per stream, the streams of a connection never contend for its
//! lock from two threads, and the frames of all its ready streams are encoded in the connection
//! poll that follows (`batched_io` then writes them together). Request handlers still run in tasks of their
//! own (`Handlers`), so a busy client's requests use every core; only the polling of response
//! bodies, where fan-out happens, is kept with the connection.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, Version};
use axum::response::IntoResponse;
use futures::stream::FuturesUnordered;
use futures::task::AtomicWaker;
use futures::{FutureExt, StreamExt};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::batched_io::BatchedIo;
use super::http::HttpError;
use crate::error::ApiError;

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets every connection
/// finish its open requests (HTTP/2 GOAWAY, HTTP/1.1 after the current response) and returns
/// once they have.
pub async fn serve(mut listener: TcpListener, router: Router, shutdown: CancellationToken) {
    let connections = TaskTracker::new();
    loop {
        // axum's accept retries transient errors (EMFILE and the like) after a pause.
        let socket = tokio::select! {
            (socket, _) = axum::serve::Listener::accept(&mut listener) => socket,
            () = shutdown.cancelled() => break,
        };
        connections.spawn(connection(socket, router.clone(), shutdown.clone()));
    }
    connections.close();
    connections.wait().await;
}

async fn connection(socket: TcpStream, router: Router, shutdown: CancellationToken) {
    // Without TCP_NODELAY, a small write after a large one waits for the peer's delayed ACK
    // (40 ms).
    if let Err(error) = socket.set_nodelay(true) {
        tracing::debug!(%error, "could not set TCP_NODELAY");
    }
    let streams = ConnectionStreams::default();
    let builder = auto::Builder::new(streams.clone());
    let mut connection =
        pin!(builder.serve_connection(TokioIo::new(BatchedIo::new(socket)), Handlers { router }));
    let mut stopping = pin!(shutdown.cancelled());
    let mut running = FuturesUnordered::new();
    let mut draining = false;
    let served = std::future::poll_fn(|cx| {
        if !draining && stopping.as_mut().poll(cx).is_ready() {
            draining = true;
            connection.as_mut().graceful_shutdown();
        }
        streams.drive(cx, &mut running, connection.as_mut())
    })
    .await;
    if let Err(error) = served {
        tracing::debug!(%error, "connection ended with an error");
    }
}

type StreamFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The executor hyper hands a connection's HTTP/2 stream futures to: it keeps them for the
/// connection's task, which polls them (`drive`) before the connection itself.
#[derive(Clone, Default)]
struct ConnectionStreams {
    shared: Arc<Spawned>,
}

#[derive(Default)]
struct Spawned {
    futures: Mutex<Vec<StreamFuture>>,
    /// The connection's task, woken for a stream handed over outside its own poll.
    task: AtomicWaker,
}

impl<F> hyper::rt::Executor<F> for ConnectionStreams
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        // A stream that panics ends alone, as it would in a task of its own: its connection and
        // the connection's other streams go on.
        let future = AssertUnwindSafe(tokio::task::unconstrained(future))
            .catch_unwind()
            .map(|outcome| {
                if outcome.is_err() {
                    tracing::error!("an HTTP/2 stream panicked");
                }
            });
        self.shared
            .futures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(Box::pin(future));
        self.shared.task.wake();
    }
}

impl ConnectionStreams {
    /// One turn of a connection's task: its ready streams, then the connection (which writes
    /// what they produced and accepts new streams), until nothing new was handed over.
    fn drive<C: Future>(
        &self,
        cx: &mut Context<'_>,
        running: &mut FuturesUnordered<StreamFuture>,
        mut connection: Pin<&mut C>,
    ) -> Poll<C::Output> {
        self.shared.task.register(cx.waker());
        loop {
            // Runs until every ready stream was polled, or FuturesUnordered yields (it wakes
            // the task first) so one connection cannot hold a worker.
            while let Poll::Ready(Some(())) = running.poll_next_unpin(cx) {}
            let done = connection.as_mut().poll(cx);
            let spawned = std::mem::take(
                &mut *self
                    .shared
                    .futures
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            );
            // A connection that has ended has no streams left to serve (HTTP/2 ends only after
            // its streams, or when the peer is gone).
            if done.is_ready() || spawned.is_empty() {
                return done;
            }
            running.extend(spawned);
        }
    }
}

/// The router as hyper's service. HTTP/2 requests are handled in a task of their own, as hyper
/// would spawn them; the response body comes back to the connection's task. HTTP/1.1 requests
/// are handled inline, one at a time per connection anyway.
#[derive(Clone)]
struct Handlers {
    router: Router,
}

impl hyper::service::Service<Request<Incoming>> for Handlers {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let spawn = request.version() == Version::HTTP_2;
        let handled = self.router.clone().oneshot(request.map(Body::new));
        if !spawn {
            return Box::pin(handled);
        }
        let mut handler = AbortOnDrop(tokio::spawn(handled));
        Box::pin(async move {
            match (&mut handler.0).await {
                Ok(handled) => handled,
                Err(error) => Ok(HttpError(ApiError::internal(format!(
                    "the request handler failed: {error}"
                )))
                .into_response()),
            }
        })
    }
}

/// A spawned handler is cancelled when its stream goes away, as an inline one would be.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use hyper::rt::Executor;

    use super::*;

    /// A stream that panics ends alone: the connection's task and its other streams go on.
    #[tokio::test]
    async fn a_stream_that_panics_ends_alone() {
        let streams = ConnectionStreams::default();
        let finished = Arc::new(AtomicBool::new(false));
        streams.execute(async { panic!("a handler bug") });
        let done = finished.clone();
        streams.execute(async move {
            tokio::task::yield_now().await;
            done.store(true, Ordering::SeqCst);
        });
        // The connection ends once the other stream has finished.
        let mut connection = pin!(std::future::poll_fn(|_| {
            if finished.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }));
        let mut running = FuturesUnordered::new();
        std::future::poll_fn(|cx| streams.drive(cx, &mut running, connection.as_mut())).await;
        assert!(finished.load(Ordering::SeqCst));
    }
}
