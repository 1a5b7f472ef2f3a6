//! [`Coalesce`]: one socket write for many responses that finish together.
//!
//! hyper's HTTP/2 server writes and flushes whenever its connection task
//! runs, and that task is woken by each response as its handler finishes.
//! A batch of puts commits as one raft entry and its 10–20 responses are
//! completed back to back, but tokio runs the connection task right after
//! each handler (the woken task takes the worker's LIFO slot), so every
//! response went out in its own `writev`: ~0.9 writes per put, each one
//! also paying for the loopback receive path in the sender's context.
//!
//! This wrapper sits under the HTTP server. Writes only append to a buffer;
//! the first flush after new bytes yields once (wakes its own task and
//! answers `Pending`, so tokio puts the connection task at the back of the
//! run queue behind the handlers already woken), and the next flush writes
//! everything gathered in one call. A response waits at most one pass of
//! the worker's run queue; the buffer is bounded (writes past
//! [`HIGH_WATER`] wait for the socket, as they would without the wrapper).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWrite;

/// Buffered bytes above which a write first drains to the socket.
const HIGH_WATER: usize = 256 * 1024;

/// See the module docs.
pub struct Coalesce<S> {
    inner: S,
    out: BytesMut,
    /// The current flush has yielded once already.
    yielded: bool,
}

impl<S> Coalesce<S> {
    pub fn new(inner: S) -> Self {
        Coalesce { inner, out: BytesMut::new(), yielded: false }
    }
}

impl<S: AsyncWrite + Unpin> Coalesce<S> {
    /// Writes buffered bytes until none are left or the socket is full.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    /// Room for more bytes: below the high-water mark, or drained to it.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.out.len() >= HIGH_WATER {
            std::task::ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Coalesce<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_room(cx))?;
        self.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_room(cx))?;
        let mut n = 0;
        for b in bufs {
            self.out.extend_from_slice(b);
            n += b.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.out.is_empty() {
            if !this.yielded {
                this.yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            std::task::ready!(this.poll_drain(cx))?;
        }
        this.yielded = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Coalesce<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn writes_are_held_until_flush_and_sent_together() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut c = Coalesce::new(a);
        c.write_all(b"one ").await.unwrap();
        c.write_all(b"two").await.unwrap();
        let mut buf = [0u8; 16];
        // Nothing reached the peer before the flush.
        let early = tokio::time::timeout(std::time::Duration::from_millis(20), b.read(&mut buf)).await;
        assert!(early.is_err(), "bytes leaked before flush");
        c.flush().await.unwrap();
        let n = b.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"one two");
    }

    #[tokio::test]
    async fn a_slow_reader_bounds_the_buffer() {
        // A pipe of 1 KiB and nobody reading: writes past the high-water
        // mark must wait, not grow the buffer without end.
        let (a, mut b) = tokio::io::duplex(1024);
        let mut c = Coalesce::new(a);
        let chunk = vec![7u8; 64 * 1024];
        let stuck = tokio::time::timeout(std::time::Duration::from_millis(100), async {
            loop {
                c.write_all(&chunk).await.unwrap();
            }
        })
        .await;
        assert!(stuck.is_err());
        assert!(c.out.len() <= HIGH_WATER + chunk.len(), "buffered {}", c.out.len());
        // Once the reader drains, everything arrives intact.
        let writer = tokio::spawn(async move {
            c.flush().await.unwrap();
            c.shutdown().await.unwrap();
        });
        let mut all = Vec::new();
        b.read_to_end(&mut all).await.unwrap();
        writer.await.unwrap();
        assert!(all.len() >= HIGH_WATER && all.iter().all(|&x| x == 7));
    }
}
