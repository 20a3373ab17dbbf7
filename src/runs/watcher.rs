//! One `WatchSessions` stream per process: lifecycle events (resolved, expired, cancelled,
//! suspended, resumed) are handed to the observer of the session's run. On reconnect the
//! runtime replays the current state of every session it holds, so nothing is missed.

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
