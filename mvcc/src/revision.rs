//! Revisions and their on-disk encoding.
//!
//! A revision is `{main, sub}`: `main` grows by one for every Put, DeleteRange
//! or Txn that changes something; `sub` numbers the changes inside it. On disk
//! a revision is 17 bytes, `main` big-endian, `_`, `sub` big-endian, so
//! RocksDB's byte order is revision order; a tombstone (a deletion) has a `t`
//! appended. This is etcd's encoding, so the hash of a history is etcd's too.

/// A `{main, sub}` revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

/// Length of an encoded revision without the tombstone mark.
pub const REV_BYTES_LEN: usize = 17;
/// Length of an encoded tombstone revision.
pub const TOMBSTONE_BYTES_LEN: usize = 18;
const TOMBSTONE_MARK: u8 = b't';

impl Revision {
    pub const fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }

    /// Encodes as the 17-byte key of a put.
    pub fn to_bytes(self) -> [u8; REV_BYTES_LEN] {
        let mut b = [0u8; REV_BYTES_LEN];
        b[..8].copy_from_slice(&self.main.to_be_bytes());
        b[8] = b'_';
        b[9..].copy_from_slice(&self.sub.to_be_bytes());
        b
    }

    /// Encodes as the 18-byte key of a tombstone.
    pub fn to_tombstone_bytes(self) -> [u8; TOMBSTONE_BYTES_LEN] {
        let mut b = [0u8; TOMBSTONE_BYTES_LEN];
        b[..REV_BYTES_LEN].copy_from_slice(&self.to_bytes());
        b[REV_BYTES_LEN] = TOMBSTONE_MARK;
        b
    }

    /// Decodes a key written by [`Revision::to_bytes`] or
    /// [`Revision::to_tombstone_bytes`]; returns the revision and whether it
    /// is a tombstone, or `None` if the bytes are not a revision.
    pub fn from_bytes(b: &[u8]) -> Option<(Revision, bool)> {
        let tombstone = match b.len() {
            REV_BYTES_LEN => false,
            TOMBSTONE_BYTES_LEN if b[REV_BYTES_LEN] == TOMBSTONE_MARK => true,
            _ => return None,
        };
        if b[8] != b'_' {
            return None;
        }
        let main = i64::from_be_bytes(b[..8].try_into().ok()?);
        let sub = i64::from_be_bytes(b[9..REV_BYTES_LEN].try_into().ok()?);
        Some((Revision { main, sub }, tombstone))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_and_sorts_like_revisions() {
        let a = Revision::new(5, 2);
        let b = Revision::new(6, 0);
        assert_eq!(Revision::from_bytes(&a.to_bytes()), Some((a, false)));
        assert_eq!(Revision::from_bytes(&a.to_tombstone_bytes()), Some((a, true)));
        assert!(a.to_bytes() < b.to_bytes());
        assert!(a.to_tombstone_bytes().as_slice() < b.to_bytes().as_slice());
        assert_eq!(Revision::from_bytes(b"short"), None);
    }
}
