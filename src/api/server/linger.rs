//! Lingering close. A server that refuses a request before reading its body (a 413, a 415)
//! and then closes the socket with the client's bytes still arriving makes the kernel answer
//! them with a reset, which can destroy the refusal before the client reads it. So a closed
//! connection's socket first stops sending (FIN), then reads and discards what the client still
//! sends, for a short while, before it goes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

/// How long a closed connection keeps reading what the client still sends.
const LINGER: Duration = Duration::from_secs(2);

/// A socket (or its read half) that lingers when dropped.
pub(super) struct Lingering<T: Linger>(Option<T>);

/// What lingers: stop sending, then drain.
pub(super) trait Linger: AsyncRead + Unpin + Send + 'static {
    /// Sends FIN (a read half has nothing to do: its write half sends it when dropped).
    fn stop_sending(&mut self) -> impl Future<Output = ()> + Send;
}

impl Linger for TcpStream {
    async fn stop_sending(&mut self) {
        let _ = self.shutdown().await;
    }
}

impl Linger for OwnedReadHalf {
    async fn stop_sending(&mut self) {}
}

impl<T: Linger> Lingering<T> {
    pub(super) fn new(inner: T) -> Self {
        Lingering(Some(inner))
    }

    fn inner(&mut self) -> Pin<&mut T> {
        // Present until dropped.
        match self.0.as_mut() {
            Some(inner) => Pin::new(inner),
            None => unreachable!("a Lingering is used only before it is dropped"),
        }
    }
}

impl<T: Linger> Drop for Lingering<T> {
    fn drop(&mut self) {
        let (Some(mut socket), Ok(runtime)) =
            (self.0.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(async move {
            socket.stop_sending().await;
            let mut discard = [0u8; 16 * 1024];
            let _ = tokio::time::timeout(LINGER, async {
                while matches!(socket.read(&mut discard).await, Ok(read) if read > 0) {}
            })
            .await;
        });
    }
}

impl<T: Linger> AsyncRead for Lingering<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.inner().poll_read(cx, buf)
    }
}

impl<T: Linger + AsyncWrite> AsyncWrite for Lingering<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.inner().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.inner().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.as_ref().is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner().poll_shutdown(cx)
    }
}
