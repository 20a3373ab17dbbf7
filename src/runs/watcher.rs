//! One `WatchSessions` stream per process: lifecycle events (resolved, expired, cancelled,
//! suspended, resumed) are handed to the observer of the session's run, and a session no run is
//! for becomes one (discovery). On reconnect the runtime replays the current state of every
//! session it holds, so nothing is missed, and nothing is made twice. And one `WatchSignals`
//! stream: ambient Signals go to the runs they correlate with.

use std::time::Duration;

use tokio_stream::StreamExt;

use super::service::RunService;

const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

pub async fn watch_sessions(service: RunService) {
    let shutdown = service.inner.shutdown.clone();
    let mut backoff = BACKOFF_START;
    loop {
        match service.runtime().watch_sessions().await {
            Ok(mut stream) => loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    item = stream.next() => match item {
                        Some(Ok(response)) => {
                            backoff = BACKOFF_START;
                            if let Some(session) = response.event.and_then(|event| event.session) {
                                if service.options().discovery
                                    && let Err(error) = super::discovery::discover(&service, &session).await
                                {
                                    tracing::warn!(session_id = %session.session_id, %error, "session discovery failed; retried when the session is seen again");
                                }
                                service.signal_session(session);
                            }
                        }
                        Some(Err(status)) => {
                            tracing::info!(code = ?status.code(), message = status.message(), "session watch ended; reconnecting");
                            break;
                        }
                        None => break,
                    }
                }
            },
            Err(error) => tracing::debug!(%error, "cannot watch runtime sessions; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

pub async fn watch_signals(service: RunService) {
    let shutdown = service.inner.shutdown.clone();
    let mut backoff = BACKOFF_START;
    loop {
        match service.runtime().watch_signals().await {
            Ok(mut stream) => loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    item = stream.next() => match item {
                        Some(Ok(response)) => {
                            backoff = BACKOFF_START;
                            if let Some(envelope) = response.envelope
                                && let Err(error) = super::discovery::ambient(&service, envelope).await
                            {
                                tracing::warn!(%error, "an ambient signal could not be stored");
                            }
                        }
                        Some(Err(status)) => {
                            tracing::info!(code = ?status.code(), message = status.message(), "signal watch ended; reconnecting");
                            break;
                        }
                        None => break,
                    }
                }
            },
            Err(error) => tracing::debug!(%error, "cannot watch runtime signals; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
