//! A connection's writes, held until the end of its task's turn. h2 writes each DATA frame
//! larger than 256 bytes separately and flushes before the next one, so the frames of a hundred
//! SSE streams of one connection would otherwise go out as a hundred writes (and the client
//! would pay a wake-up for each). Here writes collect in a buffer and a flush does not write;
//! the connection's task (`server`) writes the buffer out after each poll of the connection.
//! The buffer goes out earlier only when it grows past `WRITE_THROUGH`, and whatever the
//! socket does not take at once is written as soon as it can be.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes held before a write goes through without waiting for the end of the turn.
const WRITE_THROUGH: usize = 64 * 1024;
/// Buffer capacity an idle connection keeps at most: ten thousand SSE clients on connections
/// of their own must not each hold their largest burst.
const KEPT_CAPACITY: usize = 8 * 1024;

/// The connection as hyper sees it: reads go straight to the socket, writes to the buffer.
pub struct BatchedIo<R, W> {
    read: R,
    outgoing: Outgoing<W>,
}

/// The write side, shared by the connection and its task, which calls
/// [`Outgoing::poll_write_out`] at the end of each turn.
pub struct Outgoing<W>(Arc<Mutex<Writes<W>>>);

impl<W> Clone for Outgoing<W> {
    fn clone(&self) -> Self {
        Outgoing(self.0.clone())
    }
}

struct Writes<W> {
    socket: W,
    pending: Vec<u8>,
    /// How much of `pending` the socket has taken.
    written: usize,
    /// A write at the end of a turn failed: the connection learns it at its next write.
    failed: Option<io::ErrorKind>,
    /// The size of the last burst: the next one starts with room for as much (one allocation
    /// rather than a doubling after doubling, each copying what came before).
    last_burst: usize,
}

impl<R, W: AsyncWrite + Unpin> BatchedIo<R, W> {
    pub fn new(read: R, write: W) -> (Self, Outgoing<W>) {
        let outgoing = Outgoing(Arc::new(Mutex::new(Writes {
            socket: write,
            pending: Vec::new(),
            written: 0,
            failed: None,
            last_burst: 0,
        })));
        (
            BatchedIo {
                read,
                outgoing: outgoing.clone(),
            },
            outgoing,
        )
    }
}

impl<W: AsyncWrite + Unpin> Outgoing<W> {
    fn lock(&self) -> MutexGuard<'_, Writes<W>> {
        // The buffer is consistent at every step; a panic elsewhere leaves nothing to repair.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes out everything pending; `Pending` (woken when the socket takes more) when the
    /// socket is full. A failure is kept for the connection's next write, and returned.
    pub fn poll_write_out(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut writes = self.lock();
        let drained = writes.poll_drain(cx);
        if let Poll::Ready(Err(error)) = &drained {
            writes.failed = Some(error.kind());
        }
        drained
    }
}

impl<W: AsyncWrite + Unpin> Writes<W> {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(kind) = self.failed {
            return Poll::Ready(Err(kind.into()));
        }
        while self.written < self.pending.len() {
            let written =
                ready!(Pin::new(&mut self.socket).poll_write(cx, &self.pending[self.written..]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += written;
        }
        self.last_burst = self.pending.len();
        self.pending.clear();
        self.written = 0;
        if self.pending.capacity() > KEPT_CAPACITY {
            self.pending = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<R: AsyncRead + Unpin, W> AsyncRead for BatchedIo<R, W> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().read).poll_read(cx, buf)
    }
}

impl<R: Unpin, W: AsyncWrite + Unpin> AsyncWrite for BatchedIo<R, W> {
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
        let mut writes = self.outgoing.lock();
        if let Some(kind) = writes.failed {
            return Poll::Ready(Err(kind.into()));
        }
        if writes.pending.len() >= WRITE_THROUGH {
            ready!(writes.poll_drain(cx))?;
        }
        if writes.pending.is_empty() {
            let room = writes.last_burst;
            writes.pending.reserve(room);
        }
        let mut taken = 0;
        for buf in bufs {
            writes.pending.extend_from_slice(buf);
            taken += buf.len();
        }
        Poll::Ready(Ok(taken))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Does not write: the connection's task writes at the end of its turn.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.outgoing.lock().failed {
            Some(kind) => Poll::Ready(Err(kind.into())),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut writes = self.outgoing.lock();
        ready!(writes.poll_drain(cx))?;
        Pin::new(&mut writes.socket).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    type NearRead = tokio::io::ReadHalf<tokio::io::DuplexStream>;
    type NearWrite = tokio::io::WriteHalf<tokio::io::DuplexStream>;
    type Near = (NearRead, NearWrite);

    fn connection() -> (
        BatchedIo<NearRead, NearWrite>,
        Outgoing<NearWrite>,
        tokio::io::DuplexStream,
    ) {
        let (near, far) = tokio::io::duplex(1 << 20);
        let (read, write): Near = tokio::io::split(near);
        let (io, outgoing) = BatchedIo::new(read, write);
        (io, outgoing, far)
    }

    #[tokio::test]
    async fn writes_leave_together_at_the_end_of_the_turn() {
        let (mut io, outgoing, mut far) = connection();
        io.write_all(b"event one\n").await.expect("write");
        io.flush().await.expect("flush");
        io.write_all(b"event two\n").await.expect("write");
        io.flush().await.expect("flush");
        let mut received = vec![0u8; 64];
        let mut read = Box::pin(far.read(&mut received));
        assert!(
            futures::poll!(&mut read).is_pending(),
            "nothing leaves before the end of the turn"
        );
        std::future::poll_fn(|cx| outgoing.poll_write_out(cx))
            .await
            .expect("written out");
        let count = read.await.expect("read");
        assert_eq!(&received[..count], b"event one\nevent two\n");
    }

    #[tokio::test]
    async fn a_large_backlog_goes_out_without_waiting_for_the_end_of_the_turn() {
        let (mut io, _outgoing, mut far) = connection();
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

    #[tokio::test]
    async fn a_failed_write_out_fails_the_connections_next_write() {
        let (mut io, outgoing, far) = connection();
        drop(far);
        io.write_all(b"to nobody").await.expect("buffered");
        let failed = std::future::poll_fn(|cx| outgoing.poll_write_out(cx)).await;
        assert!(failed.is_err());
        assert!(io.write_all(b"more").await.is_err());
        assert!(io.flush().await.is_err());
    }
}
