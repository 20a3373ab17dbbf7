//! One `WatchSessions` stream per process: lifecycle events (resolved, expired, cancelled,
//! suspended, resumed) are handed to the observer of the session's run, and a session no run is
//! for becomes one (discovery). On reconnect the runtime replays the current state of every
//! session it holds, so nothing is missed, and nothing is made twice. And one `WatchSignals`
//! stream: ambient Signals go to the runs they correlate with.

use std::time::Duration;

use tokio_stream::StreamExt;

use super::service::RunService;
use crate::runtime::Error as RuntimeError;

const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

pub async fn watch_sessions(service: RunService) {
    follow(
        &service,
        "session",
        Some(&service.inner.sessions_watched),
        |service| async move { service.runtime().watch_sessions().await },
        |service, response| async move {
            if let Some(session) = response.event.and_then(|event| event.session) {
                if service.options().discovery
                    && let Err(error) = super::discovery::discover(&service, &session).await
                {
                    tracing::warn!(session_id = %session.session_id, %error, "session discovery failed; retried when the session is seen again");
                }
                service.signal_session(session);
            }
        },
    )
    .await;
}

pub async fn watch_signals(service: RunService) {
    follow(
        &service,
        "signal",
        None,
        |service| async move { service.runtime().watch_signals().await },
        |service, response| async move {
            if let Some(envelope) = response.envelope
                && let Err(error) = super::discovery::ambient(&service, envelope).await
            {
                tracing::warn!(%error, "an ambient signal could not be stored");
            }
        },
    )
    .await;
}

/// Follows one of the runtime's watch streams until shutdown: each item handled in order,
/// reconnecting with backoff whenever the stream ends or cannot be opened; `open_now` says
/// whether the stream is open.
async fn follow<T, Open, Opened, Handle, Handled>(
    service: &RunService,
    what: &'static str,
    open_now: Option<&std::sync::atomic::AtomicBool>,
    open: Open,
    handle: Handle,
) where
    Open: Fn(RunService) -> Opened,
    Opened: Future<Output = Result<tonic::Streaming<T>, RuntimeError>>,
    Handle: Fn(RunService, T) -> Handled,
    Handled: Future<Output = ()>,
{
    let shutdown = service.inner.shutdown.clone();
    let mut backoff = BACKOFF_START;
    let set_open = |open: bool| {
        if let Some(flag) = open_now {
            flag.store(open, std::sync::atomic::Ordering::Relaxed);
        }
    };
    loop {
        let opened = open(service.clone()).await;
        set_open(opened.is_ok());
        match opened {
            Ok(mut stream) => loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    item = stream.next() => match item {
                        Some(Ok(response)) => {
                            backoff = BACKOFF_START;
                            handle(service.clone(), response).await;
                        }
                        Some(Err(status)) => {
                            tracing::info!(code = ?status.code(), message = status.message(), "{what} watch ended; reconnecting");
                            break;
                        }
                        None => break,
                    }
                }
            },
            Err(error) => tracing::debug!(%error, "cannot watch runtime {what}s; retrying"),
        }
        set_open(false);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
