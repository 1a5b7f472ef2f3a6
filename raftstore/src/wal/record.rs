//! Record framing and the binary encoding of what the WAL stores.
//!
//! A frame is `len: u32 LE | crc: u32 LE | body: len bytes`, where `crc` is
//! the CRC-32 (crc32fast, IEEE) of the four `len` bytes followed by the body,
//! so a damaged length is caught as surely as a damaged body. A frame whose
//! eight header bytes are all zero marks the end of the records in a segment:
//! that is what the preallocated, zero-filled rest of a segment reads as, and
//! no real frame can look like it (the body is never empty).
//!
//! The body's first byte is the record kind:
//!
//! | kind | record      | rest of the body                                            |
//! | ---- | ----------- | ----------------------------------------------------------- |
//! | 1    | `Header`    | magic `KWAL`, version `1`, segment seq, vote?, committed?, purged? |
//! | 2    | `Entry`     | term, leader node id, index, payload kind, payload bytes     |
//! | 3    | `Vote`      | vote                                                        |
//! | 4    | `Committed` | log id?                                                     |
//! | 5    | `Truncate`  | log id? (entries after it are deleted)                      |
//! | 6    | `Purge`     | log id (entries up to it are deleted)                       |
//!
//! Integers are u64 little-endian; a log id is `term, node id, index`; a vote
//! is `term, node id, committed: u8`; `x?` is a `0` byte or a `1` byte then
//! `x`. The entry payload kind is `0` blank, `1` normal (the payload bytes are
//! the [`Command`] bytes as they are), `2` membership (the payload bytes are
//! the membership as JSON: membership changes are rare, so readability wins).

use bytes::Bytes;

use crate::types::Command;
use crate::types::Entry;
use crate::types::EntryPayload;
use crate::types::LeaderId;
use crate::types::LogId;
use crate::types::Membership;
use crate::types::Vote;

/// Length of a frame header: body length and CRC.
pub(crate) const FRAME_HEADER_LEN: usize = 8;

const MAGIC: &[u8; 4] = b"KWAL";
const FORMAT_VERSION: u8 = 1;

const KIND_HEADER: u8 = 1;
const KIND_ENTRY: u8 = 2;
const KIND_VOTE: u8 = 3;
const KIND_COMMITTED: u8 = 4;
const KIND_TRUNCATE: u8 = 5;
const KIND_PURGE: u8 = 6;

const PAYLOAD_BLANK: u8 = 0;
const PAYLOAD_NORMAL: u8 = 1;
const PAYLOAD_MEMBERSHIP: u8 = 2;

/// The state a segment starts from: written as the first record of every
/// segment, so that dropping older segments never loses the vote, the
/// committed log id or the purge point.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub(crate) seq: u64,
    pub(crate) vote: Option<Vote>,
    pub(crate) committed: Option<LogId>,
    pub(crate) purged: Option<LogId>,
}

/// One decoded WAL record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Record {
    Header(SegmentHeader),
    Entry(Entry),
    Vote(Vote),
    Committed(Option<LogId>),
    Truncate(Option<LogId>),
    Purge(LogId),
}

/// Why a record could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The body does not fit the frame's 32-bit length.
    #[error("record body of {len} bytes exceeds the 4 GiB frame limit")]
    TooLarge { len: usize },
    /// A membership payload could not be serialized.
    #[error("serialize membership")]
    SerializeMembership(#[source] serde_json::Error),
}

/// Why a frame whose CRC matched could not be decoded: a format or version
/// mismatch, never a torn write.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("record ends early while reading {what}")]
    Truncated { what: &'static str },
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("unknown entry payload kind {0}")]
    UnknownPayloadKind(u8),
    #[error("segment header has magic {found:?}, want \"KWAL\"")]
    BadMagic { found: [u8; 4] },
    #[error("segment header has format version {0}, this build reads version 1")]
    UnsupportedVersion(u8),
    #[error("invalid option tag {0}")]
    BadOptionTag(u8),
    #[error("{extra} trailing bytes after the record")]
    TrailingBytes { extra: usize },
    #[error("deserialize membership")]
    DeserializeMembership(#[source] serde_json::Error),
}

/// What [`read_frame`] found at an offset.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// A frame whose CRC matched; `next` is the offset just past it.
    Valid { body: &'a [u8], next: usize },
    /// Eight zero bytes, or fewer than eight bytes all zero: no more records.
    End,
    /// A frame that is incomplete or fails its CRC.
    Bad { reason: &'static str },
}

/// Reads the frame at `offset` of `buf`.
pub(crate) fn read_frame(buf: &[u8], offset: usize) -> Frame<'_> {
    let rest = buf.get(offset..).unwrap_or_default();
    if rest.len() < FRAME_HEADER_LEN {
        return if rest.iter().all(|b| *b == 0) {
            Frame::End
        } else {
            Frame::Bad { reason: "torn frame header" }
        };
    }
    let header = &rest[..FRAME_HEADER_LEN];
    if header.iter().all(|b| *b == 0) {
        return Frame::End;
    }
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    if len == 0 {
        return Frame::Bad { reason: "zero frame length" };
    }
    let Some(body) = rest.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
        return Frame::Bad { reason: "frame extends past the end of the segment" };
    };
    if frame_crc(&header[0..4], body) != crc {
        return Frame::Bad { reason: "CRC mismatch" };
    }
    Frame::Valid { body, next: offset + FRAME_HEADER_LEN + len }
}

fn frame_crc(len_bytes: &[u8], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len_bytes);
    h.update(body);
    h.finalize()
}

/// Appends one frame holding `record` to `out`.
pub(crate) fn encode(record: &Record, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    framed(out, |out| encode_body(record, out))
}

/// Appends one frame per entry to `out`.
pub(crate) fn encode_entries<'a>(
    entries: impl IntoIterator<Item = &'a Entry>,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    for entry in entries {
        framed(out, |out| encode_entry_body(entry, out))?;
    }
    Ok(())
}

/// Appends a frame whose body `body` writes, filling in length and CRC; on
/// error `out` is left as it was.
fn framed(
    out: &mut Vec<u8>,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    let len = body(out).and_then(|()| {
        let len = out.len() - start - FRAME_HEADER_LEN;
        u32::try_from(len).map_err(|_| EncodeError::TooLarge { len })
    });
    let len = match len {
        Ok(len) => len,
        Err(e) => {
            out.truncate(start);
            return Err(e);
        }
    };
    let len_bytes = len.to_le_bytes();
    let crc = frame_crc(&len_bytes, &out[start + FRAME_HEADER_LEN..]);
    out[start..start + 4].copy_from_slice(&len_bytes);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

fn encode_entry_body(entry: &Entry, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.push(KIND_ENTRY);
    put_log_id(out, &entry.log_id);
    match &entry.payload {
        EntryPayload::Blank => out.push(PAYLOAD_BLANK),
        EntryPayload::Normal(cmd) => {
            out.push(PAYLOAD_NORMAL);
            out.extend_from_slice(&cmd.0);
        }
        EntryPayload::Membership(m) => {
            out.push(PAYLOAD_MEMBERSHIP);
            serde_json::to_writer(&mut *out, m).map_err(EncodeError::SerializeMembership)?;
        }
    }
    Ok(())
}

fn encode_body(record: &Record, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match record {
        Record::Header(h) => {
            out.push(KIND_HEADER);
            out.extend_from_slice(MAGIC);
            out.push(FORMAT_VERSION);
            put_u64(out, h.seq);
            put_opt(out, h.vote.as_ref(), put_vote);
            put_opt(out, h.committed.as_ref(), put_log_id);
            put_opt(out, h.purged.as_ref(), put_log_id);
        }
        Record::Entry(entry) => encode_entry_body(entry, out)?,
        Record::Vote(v) => {
            out.push(KIND_VOTE);
            put_vote(out, v);
        }
        Record::Committed(c) => {
            out.push(KIND_COMMITTED);
            put_opt(out, c.as_ref(), put_log_id);
        }
        Record::Truncate(after) => {
            out.push(KIND_TRUNCATE);
            put_opt(out, after.as_ref(), put_log_id);
        }
        Record::Purge(upto) => {
            out.push(KIND_PURGE);
            put_log_id(out, upto);
        }
    }
    Ok(())
}

/// Decodes the body of a frame whose CRC matched.
pub(crate) fn decode(body: &[u8]) -> Result<Record, DecodeError> {
    let mut d = Decoder { buf: body };
    let record = match d.u8("record kind")? {
        KIND_HEADER => {
            let magic: [u8; 4] = d.take(4, "magic")?.try_into().expect("4 bytes");
            if &magic != MAGIC {
                return Err(DecodeError::BadMagic { found: magic });
            }
            let version = d.u8("format version")?;
            if version != FORMAT_VERSION {
                return Err(DecodeError::UnsupportedVersion(version));
            }
            Record::Header(SegmentHeader {
                seq: d.u64("segment seq")?,
                vote: d.opt(Decoder::vote)?,
                committed: d.opt(Decoder::log_id)?,
                purged: d.opt(Decoder::log_id)?,
            })
        }
        KIND_ENTRY => {
            let log_id = d.log_id()?;
            let payload = match d.u8("payload kind")? {
                PAYLOAD_BLANK => EntryPayload::Blank,
                PAYLOAD_NORMAL => EntryPayload::Normal(Command(Bytes::copy_from_slice(d.rest()))),
                PAYLOAD_MEMBERSHIP => {
                    let m: Membership =
                        serde_json::from_slice(d.rest()).map_err(DecodeError::DeserializeMembership)?;
                    EntryPayload::Membership(m)
                }
                other => return Err(DecodeError::UnknownPayloadKind(other)),
            };
            Record::Entry(Entry { log_id, payload })
        }
        KIND_VOTE => Record::Vote(d.vote()?),
        KIND_COMMITTED => Record::Committed(d.opt(Decoder::log_id)?),
        KIND_TRUNCATE => Record::Truncate(d.opt(Decoder::log_id)?),
        KIND_PURGE => Record::Purge(d.log_id()?),
        other => return Err(DecodeError::UnknownKind(other)),
    };
    if !d.buf.is_empty() {
        return Err(DecodeError::TrailingBytes { extra: d.buf.len() });
    }
    Ok(record)
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_log_id(out: &mut Vec<u8>, id: &LogId) {
    put_u64(out, id.leader_id.term);
    put_u64(out, id.leader_id.node_id);
    put_u64(out, id.index);
}

fn put_vote(out: &mut Vec<u8>, v: &Vote) {
    put_u64(out, v.leader_id.term);
    put_u64(out, v.leader_id.node_id);
    out.push(u8::from(v.committed));
}

fn put_opt<T>(out: &mut Vec<u8>, v: Option<&T>, put: fn(&mut Vec<u8>, &T)) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            put(out, v);
        }
    }
}

struct Decoder<'a> {
    buf: &'a [u8],
}

impl<'a> Decoder<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated { what });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }

    fn log_id(&mut self) -> Result<LogId, DecodeError> {
        let term = self.u64("log id term")?;
        let node_id = self.u64("log id node id")?;
        let index = self.u64("log id index")?;
        Ok(LogId::new(LeaderId { term, node_id }, index))
    }

    fn vote(&mut self) -> Result<Vote, DecodeError> {
        let term = self.u64("vote term")?;
        let node_id = self.u64("vote node id")?;
        let committed = match self.u8("vote committed")? {
            0 => false,
            1 => true,
            other => return Err(DecodeError::BadOptionTag(other)),
        };
        Ok(Vote { leader_id: LeaderId { term, node_id }, committed })
    }

    fn opt<T>(&mut self, get: fn(&mut Self) -> Result<T, DecodeError>) -> Result<Option<T>, DecodeError> {
        match self.u8("option tag")? {
            0 => Ok(None),
            1 => get(self).map(Some),
            other => Err(DecodeError::BadOptionTag(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::types::Member;

    fn log_id(term: u64, node: u64, index: u64) -> LogId {
        LogId::new(LeaderId { term, node_id: node }, index)
    }

    fn round_trip(record: Record) {
        let mut buf = Vec::new();
        encode(&record, &mut buf).unwrap();
        let Frame::Valid { body, next } = read_frame(&buf, 0) else { panic!("frame not valid") };
        assert_eq!(next, buf.len());
        assert_eq!(decode(body).unwrap(), record);
    }

    #[test]
    fn every_record_kind_round_trips() {
        let vote = Vote { leader_id: LeaderId { term: 7, node_id: 3 }, committed: true };
        let members = Membership::new_with_defaults(vec![BTreeSet::from([1, 2, 3])], []);
        let nodes = Membership::new(
            vec![BTreeSet::from([1])],
            std::collections::BTreeMap::from([(
                1,
                Member { name: "n1".into(), peer_urls: vec!["http://a:2380".into()], client_urls: vec![] },
            )]),
        )
        .unwrap();
        round_trip(Record::Header(SegmentHeader {
            seq: 9,
            vote: Some(vote),
            committed: Some(log_id(1, 2, 3)),
            purged: None,
        }));
        round_trip(Record::Header(SegmentHeader::default()));
        round_trip(Record::Entry(Entry { log_id: log_id(2, 1, 10), payload: EntryPayload::Blank }));
        round_trip(Record::Entry(Entry {
            log_id: log_id(2, 1, 11),
            payload: EntryPayload::Normal(Command(Bytes::from_static(b"\x00put k v"))),
        }));
        round_trip(Record::Entry(Entry {
            log_id: log_id(2, 1, 12),
            payload: EntryPayload::Membership(members),
        }));
        round_trip(Record::Entry(Entry {
            log_id: log_id(2, 1, 13),
            payload: EntryPayload::Membership(nodes),
        }));
        round_trip(Record::Vote(vote));
        round_trip(Record::Committed(None));
        round_trip(Record::Committed(Some(log_id(4, 4, 4))));
        round_trip(Record::Truncate(Some(log_id(1, 1, 1))));
        round_trip(Record::Truncate(None));
        round_trip(Record::Purge(log_id(5, 0, 100)));
    }

    #[test]
    fn zero_bytes_read_as_the_end() {
        assert_eq!(read_frame(&[0; 64], 0), Frame::End);
        assert_eq!(read_frame(&[0; 3], 0), Frame::End);
        assert_eq!(read_frame(&[], 0), Frame::End);
    }

    #[test]
    fn every_single_byte_change_is_caught() {
        let mut buf = Vec::new();
        encode(&Record::Purge(log_id(5, 0, 100)), &mut buf).unwrap();
        for i in 0..buf.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = buf.clone();
                bad[i] ^= flip;
                assert!(
                    !matches!(read_frame(&bad, 0), Frame::Valid { .. }),
                    "byte {i} ^ {flip:#x} went unnoticed"
                );
            }
        }
    }
}
