//! [`AuthorityFix`]: lets clients that send a URL as the HTTP/2 `:authority`
//! reach the gRPC services.
//!
//! etcd's Go client (the one in `etcdctl` 3.4) dials a member for
//! `endpoint status`, `endpoint hashkv` and the like with the endpoint as
//! given, so its requests carry `:authority: http://127.0.0.1:2379`. grpc-go
//! servers accept that; the `h2` crate under tonic resets the stream as a
//! protocol error, because it is not a valid authority. This wrapper sits
//! between the accepted TCP connection and the HTTP/2 server:
//!
//! - It parses the client's frames. A connection that does not start with
//!   the HTTP/2 preface (HTTP/1.1 for `/health`) passes through untouched.
//! - It decodes the first request's header block (HPACK). If its authority
//!   is a valid `host:port`, every byte from then on passes through as it
//!   came: the server's HPACK decoder follows the client's encoder, as
//!   without the wrapper, and the cost is parsing frame headers up to the
//!   first request.
//! - If it is a URL, the connection is rewritten from then on: every header
//!   block is decoded (following the client's HPACK state) and sent on as
//!   plain literals that never touch the server's dynamic table, with the
//!   scheme and any trailing slash cut off the authority. The first block is
//!   rewritten the same way, so the server's table stays empty throughout.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame payload a peer may send before SETTINGS say more
/// (RFC 9113's default `SETTINGS_MAX_FRAME_SIZE`).
const MAX_FRAME: usize = 16_384;

enum Mode {
    /// Waiting to see whether the connection speaks HTTP/2.
    Preface,
    /// HTTP/2, before the first request's headers.
    Undecided,
    /// Every header block is decoded and re-encoded.
    Rewrite,
    /// Bytes pass as they are.
    Passthrough,
}

/// A header block split over HEADERS + CONTINUATION frames, being gathered.
struct Block {
    stream_id: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

/// See the module docs.
pub struct AuthorityFix<S> {
    inner: S,
    mode: Mode,
    /// Bytes read from the client, not yet processed.
    input: BytesMut,
    /// Processed bytes for the server to read.
    output: BytesMut,
    /// Frames held back while the first block decides the mode.
    held: BytesMut,
    decoder: hpack::Decoder<'static>,
    block: Option<Block>,
    eof: bool,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> Self {
        AuthorityFix {
            inner,
            mode: Mode::Preface,
            input: BytesMut::new(),
            output: BytesMut::new(),
            held: BytesMut::new(),
            decoder: hpack::Decoder::new(),
            block: None,
            eof: false,
        }
    }

    /// Moves what can be decided from `input` to `output`.
    fn process(&mut self) -> io::Result<()> {
        loop {
            match self.mode {
                Mode::Passthrough => {
                    let all = self.input.split();
                    self.output.extend_from_slice(&all);
                    return Ok(());
                }
                Mode::Preface => {
                    let n = self.input.len().min(PREFACE.len());
                    if self.input[..n] != PREFACE[..n] {
                        self.mode = Mode::Passthrough;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return Ok(());
                    }
                    let preface = self.input.split_to(PREFACE.len());
                    self.output.extend_from_slice(&preface);
                    self.mode = Mode::Undecided;
                }
                Mode::Undecided | Mode::Rewrite => {
                    if self.input.len() < FRAME_HEADER {
                        return Ok(());
                    }
                    let len = u32::from_be_bytes([0, self.input[0], self.input[1], self.input[2]]) as usize;
                    if self.input.len() < FRAME_HEADER + len {
                        return Ok(());
                    }
                    let frame = self.input.split_to(FRAME_HEADER + len);
                    self.frame(frame)?;
                }
            }
        }
    }

    fn frame(&mut self, frame: BytesMut) -> io::Result<()> {
        let kind = frame[3];
        let flags = frame[4];
        let stream_id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER..];
        match kind {
            HEADERS => {
                let mut p = payload;
                let mut pad = 0;
                if flags & PADDED != 0 {
                    pad = *p.first().ok_or_else(|| bad("HEADERS without its pad length"))? as usize;
                    p = &p[1..];
                }
                let mut priority = None;
                if flags & PRIORITY != 0 {
                    if p.len() < 5 {
                        return Err(bad("HEADERS without its priority"));
                    }
                    priority = Some([p[0], p[1], p[2], p[3], p[4]]);
                    p = &p[5..];
                }
                if pad > p.len() {
                    return Err(bad("HEADERS padded past its end"));
                }
                let fragment = p[..p.len() - pad].to_vec();
                self.block = Some(Block { stream_id, flags, priority, fragment });
                self.hold(frame);
                if flags & END_HEADERS != 0 {
                    self.end_block()?;
                }
            }
            CONTINUATION => {
                let Some(block) = self.block.as_mut() else {
                    return Err(bad("CONTINUATION without HEADERS"));
                };
                block.fragment.extend_from_slice(payload);
                self.hold(frame);
                if flags & END_HEADERS != 0 {
                    self.end_block()?;
                }
            }
            _ => self.pass(frame),
        }
        Ok(())
    }

    /// Keeps a frame of a header block until the block is decided.
    fn hold(&mut self, frame: BytesMut) {
        self.held.extend_from_slice(&frame);
    }

    fn pass(&mut self, frame: BytesMut) {
        if self.block.is_some() {
            // Frames inside a header block are a protocol error; let the
            // server see them in order and say so.
            self.held.extend_from_slice(&frame);
        } else {
            self.output.extend_from_slice(&frame);
        }
    }

    fn end_block(&mut self) -> io::Result<()> {
        let block = self.block.take().expect("a block is being gathered");
        let mut headers = self.decoder.decode(&block.fragment).map_err(|e| bad(&format!("HPACK: {e:?}")))?;
        if matches!(self.mode, Mode::Undecided) {
            let url = headers.iter().any(|(n, v)| n == b":authority" && fixed_authority(v).is_some());
            if !url {
                // Forward as it came, and stop looking.
                let held = self.held.split();
                self.output.extend_from_slice(&held);
                self.mode = Mode::Passthrough;
                return Ok(());
            }
            tracing::debug!("rewriting the :authority of a client that sends a URL");
            self.mode = Mode::Rewrite;
        }
        self.held.clear();
        for (name, value) in headers.iter_mut() {
            if name == b":authority"
                && let Some(fixed) = fixed_authority(value)
            {
                *value = fixed;
            }
        }
        let mut encoded = Vec::new();
        for (name, value) in &headers {
            // Literal without indexing, new name, no Huffman: the server's
            // dynamic table is never touched.
            encoded.push(0x00);
            put_string(&mut encoded, name);
            put_string(&mut encoded, value);
        }
        self.emit_block(&block, &encoded);
        Ok(())
    }

    fn emit_block(&mut self, block: &Block, encoded: &[u8]) {
        let mut first = Vec::new();
        if let Some(p) = block.priority {
            first.extend_from_slice(&p);
        }
        let room = MAX_FRAME - first.len();
        let (head, mut rest) = encoded.split_at(encoded.len().min(room));
        first.extend_from_slice(head);
        let mut flags = block.flags & (END_STREAM | PRIORITY);
        if rest.is_empty() {
            flags |= END_HEADERS;
        }
        self.put_frame(HEADERS, flags, block.stream_id, &first);
        while !rest.is_empty() {
            let (piece, tail) = rest.split_at(rest.len().min(MAX_FRAME));
            rest = tail;
            let flags = if rest.is_empty() { END_HEADERS } else { 0 };
            self.put_frame(CONTINUATION, flags, block.stream_id, piece);
        }
    }

    fn put_frame(&mut self, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
        let len = payload.len() as u32;
        self.output.put_slice(&len.to_be_bytes()[1..]);
        self.output.put_u8(kind);
        self.output.put_u8(flags);
        self.output.put_u32(stream_id);
        self.output.put_slice(payload);
    }
}

/// `host:port` from an authority that is a URL (`http://host:port/`), or
/// `None` if it is not one.
fn fixed_authority(value: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(value).ok()?;
    let rest = text.strip_prefix("http://").or_else(|| text.strip_prefix("https://"))?;
    Some(rest.trim_end_matches('/').as_bytes().to_vec())
}

/// An HPACK string literal without Huffman coding.
fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    // A 7-bit prefix integer (RFC 7541 §5.1), H bit clear.
    let mut n = s.len();
    if n < 127 {
        out.push(n as u8);
    } else {
        out.push(127);
        n -= 127;
        while n >= 128 {
            out.push((n % 128 + 128) as u8);
            n /= 128;
        }
        out.push(n as u8);
    }
    out.extend_from_slice(s);
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("HTTP/2 from a client: {what}"))
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for AuthorityFix<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // What is left is an incomplete frame: the server sees the
                // connection end as the client ended it.
                let rest = this.input.split();
                if !rest.is_empty() {
                    this.output.extend_from_slice(&rest);
                    continue;
                }
                return Poll::Ready(Ok(()));
            }
            if matches!(this.mode, Mode::Passthrough) && this.input.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    if rb.filled().is_empty() {
                        this.eof = true;
                    } else {
                        this.input.extend_from_slice(rb.filled());
                    }
                    this.process()?;
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_scheme_and_hosts_stay() {
        assert_eq!(fixed_authority(b"http://127.0.0.1:2379"), Some(b"127.0.0.1:2379".to_vec()));
        assert_eq!(fixed_authority(b"https://node-1:2379/"), Some(b"node-1:2379".to_vec()));
        assert_eq!(fixed_authority(b"127.0.0.1:2379"), None);
    }

    #[test]
    fn long_strings_use_the_prefix_integer() {
        let mut out = Vec::new();
        put_string(&mut out, &[b'x'; 300]);
        // 127 + (300 - 127 = 173 = 45 + 128·1) → 0x7f, 0xad, 0x01.
        assert_eq!(&out[..3], &[0x7f, 0xad, 0x01]);
        assert_eq!(out.len(), 303);
        let mut d = hpack::Decoder::new();
        let mut block = vec![0x00];
        put_string(&mut block, b"name");
        put_string(&mut block, &[b'x'; 300]);
        assert_eq!(d.decode(&block).unwrap(), vec![(b"name".to_vec(), vec![b'x'; 300])]);
    }

    /// A client's first block with a URL authority comes out as literals
    /// with a `host:port` authority; a second block that indexes the
    /// client's dynamic table decodes too.
    #[tokio::test]
    async fn a_url_authority_is_rewritten_across_blocks() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut enc = hpack::Encoder::new();
        let headers: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/etcdserverpb.Maintenance/Status"),
            (b":authority", b"http://127.0.0.1:2379"),
            (b"content-type", b"application/grpc"),
        ];
        let mut wire = PREFACE.to_vec();
        for stream in [1u32, 3] {
            let block = enc.encode(headers.iter().copied());
            wire.extend_from_slice(&(block.len() as u32).to_be_bytes()[1..]);
            wire.extend_from_slice(&[HEADERS, END_HEADERS]);
            wire.extend_from_slice(&stream.to_be_bytes());
            wire.extend_from_slice(&block);
        }
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client.write_all(&wire).await.unwrap();
        drop(client);
        let mut fixed = AuthorityFix::new(server);
        let mut out = Vec::new();
        fixed.read_to_end(&mut out).await.unwrap();
        assert_eq!(&out[..PREFACE.len()], PREFACE);
        let mut rest = &out[PREFACE.len()..];
        let mut dec = hpack::Decoder::new();
        for _ in 0..2 {
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            assert_eq!(rest[3], HEADERS);
            assert_ne!(rest[4] & END_HEADERS, 0);
            let decoded = dec.decode(&rest[FRAME_HEADER..FRAME_HEADER + len]).unwrap();
            let authority = decoded.iter().find(|(n, _)| n == b":authority").unwrap();
            assert_eq!(authority.1, b"127.0.0.1:2379");
            rest = &rest[FRAME_HEADER + len..];
        }
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn http1_and_valid_authorities_pass_untouched() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client.write_all(&request).await.unwrap();
        drop(client);
        let mut out = Vec::new();
        AuthorityFix::new(server).read_to_end(&mut out).await.unwrap();
        assert_eq!(out, request);

        let mut enc = hpack::Encoder::new();
        let block = enc.encode([(&b":authority"[..], &b"127.0.0.1:2379"[..]), (b":path", b"/x")]);
        let mut wire = PREFACE.to_vec();
        wire.extend_from_slice(&(block.len() as u32).to_be_bytes()[1..]);
        wire.extend_from_slice(&[HEADERS, END_HEADERS | END_STREAM, 0, 0, 0, 1]);
        wire.extend_from_slice(&block);
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client.write_all(&wire).await.unwrap();
        drop(client);
        let mut out = Vec::new();
        AuthorityFix::new(server).read_to_end(&mut out).await.unwrap();
        assert_eq!(out, wire);
    }
}
