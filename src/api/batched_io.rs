//! A connection's writes, batched: they collect in a buffer until the connection flushes, and a
//! flush first lets the other ready tasks run. h2 hands each DATA frame larger than 256 bytes
//! to the socket as a write of its own, and the streams of one HTTP/2 connection are woken one
//! by one while an event is published to thousands of them: without this, an event went out
//! to a hundred SSE streams on one connection in dozens of writes, and the client paid a
//! wake-up for each.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes held before a write goes through without waiting for the flush.
const WRITE_THROUGH: usize = 64 * 1024;
/// Scheduler turns a flush waits at most while its connection is still being given frames.
const MAX_DEFERRALS: u8 = 32;
/// Buffer capacity a connection keeps between bursts at most.
const KEPT_CAPACITY: usize = 2 * WRITE_THROUGH;

/// A connection whose writes collect in a buffer until a flush, which waits for turns of the
/// scheduler for as long as each turn brought more frames (up to `MAX_DEFERRALS`).
pub struct BatchedIo<T> {
    inner: T,
    pending: Vec<u8>,
    /// How much of `pending` the socket has taken.
    written: usize,
    /// Turns the current flush has waited.
    deferrals: u8,
    /// Bytes were added since the flush last yielded.
    added: bool,
}

impl<T: AsyncWrite + Unpin> BatchedIo<T> {
    pub fn new(inner: T) -> Self {
        BatchedIo {
            inner,
            pending: Vec::new(),
            written: 0,
            deferrals: 0,
            added: false,
        }
    }

    /// Writes out everything pending.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let written =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += written;
        }
        self.pending.clear();
        self.written = 0;
        // The buffer is kept for the next burst (growing it again, one doubling at a time,
        // cost more than the writes it batches), unless one write made it much larger than
        // a burst is.
        if self.pending.capacity() > KEPT_CAPACITY {
            self.pending = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for BatchedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for BatchedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.len() >= WRITE_THROUGH {
            ready!(this.poll_drain(cx))?;
        }
        let mut taken = 0;
        for buf in bufs {
            this.pending.extend_from_slice(buf);
            taken += buf.len();
        }
        this.added |= taken > 0;
        Poll::Ready(Ok(taken))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Rescheduled behind the tasks already queued (a task that wakes itself is queued last,
        // not run next). While an event is published to thousands of streams, the streams of
        // this connection are woken one by one over that time; the flush waits again while the
        // last turn brought frames, so they leave together.
        if !this.pending.is_empty() && this.added && this.deferrals < MAX_DEFERRALS {
            this.deferrals += 1;
            this.added = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(this.poll_drain(cx))?;
        this.deferrals = 0;
        this.added = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn writes_leave_together_at_the_flush() {
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let mut io = BatchedIo::new(near);
        io.write_all(b"event one\n").await.expect("write");
        io.write_all(b"event two\n").await.expect("write");
        let mut received = vec![0u8; 64];
        let mut read = Box::pin(far.read(&mut received));
        assert!(
            futures::poll!(&mut read).is_pending(),
            "nothing leaves before the flush"
        );
        // The first flush yields once, then writes everything.
        let mut flush = Box::pin(io.flush());
        assert!(futures::poll!(&mut flush).is_pending());
        flush.await.expect("flush");
        let count = read.await.expect("read");
        assert_eq!(&received[..count], b"event one\nevent two\n");
    }

    /// A flush waits again after a turn that brought more frames, and writes once a turn
    /// brought none, or after `MAX_DEFERRALS` turns whatever came.
    #[tokio::test]
    async fn a_flush_waits_while_frames_keep_coming() {
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let mut io = BatchedIo::new(near);
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut flush = |io: &mut BatchedIo<_>| Pin::new(io).poll_flush(&mut cx).is_ready();
        io.write_all(b"one\n").await.expect("write");
        assert!(!flush(&mut io), "the first turn");
        io.write_all(b"two\n").await.expect("write");
        assert!(!flush(&mut io), "the last turn brought a frame");
        assert!(flush(&mut io), "the last turn brought nothing");
        let mut received = vec![0u8; 64];
        let count = far.read(&mut received).await.expect("read");
        assert_eq!(&received[..count], b"one\ntwo\n");

        for turn in 0..MAX_DEFERRALS {
            io.write_all(b"x").await.expect("write");
            assert!(!flush(&mut io), "turn {turn} waits");
        }
        io.write_all(b"x").await.expect("write");
        assert!(flush(&mut io), "no more than MAX_DEFERRALS turns");
    }

    #[tokio::test]
    async fn a_large_backlog_goes_out_without_waiting_for_the_flush() {
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let mut io = BatchedIo::new(near);
        let backlog = vec![b'x'; WRITE_THROUGH];
        io.write_all(&backlog).await.expect("write");
        io.write_all(b"y").await.expect("write");
        let mut received = vec![0u8; WRITE_THROUGH];
        far.read_exact(&mut received)
            .await
            .expect("the backlog arrives");
        assert_eq!(received, backlog);
        io.shutdown().await.expect("shutdown writes the rest");
        let mut rest = Vec::new();
        far.read_to_end(&mut rest).await.expect("read");
        assert_eq!(rest, b"y");
    }
}
