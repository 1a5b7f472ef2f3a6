//! How the WAL is laid out on disk and how it syncs.

use serde::Deserialize;
use serde::Serialize;

/// WAL settings. Serde with defaults, `kebab-case`, unknown keys rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct WalConfig {
    /// Size each segment file is preallocated to, in bytes. A segment is
    /// sealed when the next batch would not fit; a single batch larger than
    /// this gets a segment of its own that grows past it.
    pub segment_size: u64,
    /// Whether `save_committed` waits for the committed log id to be synced.
    ///
    /// `true` (the default) makes the committed log id durable before it is
    /// acknowledged. `false` writes it in order behind the entries it covers
    /// and lets the next group commit sync it, as etcd does (`raft.MustSync`
    /// ignores a commit-only change): this keeps a second fsync off the
    /// commit path, at the price that a machine crash may restart with an
    /// older committed log id (never one whose entries are missing).
    pub sync_committed: bool,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig { segment_size: 64 * 1024 * 1024, sync_committed: true }
    }
}

/// A [`WalConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalConfigError {
    #[error("segment-size {got} is below the minimum of {min} bytes")]
    SegmentTooSmall { got: u64, min: u64 },
}

impl WalConfig {
    /// The smallest segment accepted: room for a header and some records.
    pub const MIN_SEGMENT_SIZE: u64 = 4096;

    pub fn validate(&self) -> Result<(), WalConfigError> {
        if self.segment_size < Self::MIN_SEGMENT_SIZE {
            return Err(WalConfigError::SegmentTooSmall {
                got: self.segment_size,
                min: Self::MIN_SEGMENT_SIZE,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kebab_case_and_rejects_unknown_keys() {
        let c: WalConfig = serde_json::from_str(r#"{"segment-size": 8192}"#).unwrap();
        assert_eq!(c, WalConfig { segment_size: 8192, ..WalConfig::default() });
        assert!(serde_json::from_str::<WalConfig>(r#"{"segment_size": 8192}"#).is_err());
        assert!(WalConfig { segment_size: 100, ..WalConfig::default() }.validate().is_err());
        assert!(WalConfig::default().validate().is_ok());
    }
}
