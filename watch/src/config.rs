//! The hub's knobs, with etcd's defaults where etcd has one.

use std::time::Duration;

/// Configuration of a [`WatchHub`](crate::WatchHub).
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Responses a stream may hold unread before its watchers are parked
    /// (etcd's `chanBufLen`, 128). Control responses (created, canceled,
    /// requested progress) are always queued and count toward it.
    pub stream_capacity: usize,
    /// Revisions kept in the in-memory history ring.
    pub history_revisions: usize,
    /// Approximate bytes (keys and values) the history ring may hold.
    pub history_bytes: usize,
    /// A response larger than this is split into fragments for watchers that
    /// asked for `fragment` (etcd's `--max-request-bytes`, 1.5 MiB).
    pub max_request_bytes: usize,
    /// Period of progress notifications for watchers that asked for
    /// `progress_notify` (etcd's `--experimental-watch-progress-notify-interval`,
    /// 10 minutes).
    pub progress_notify_interval: Duration,
    /// How often the sync thread looks for work even when nobody woke it
    /// (etcd's `watchResyncPeriod`, 100 ms).
    pub resync_interval: Duration,
    /// Unsynced watchers handled per sync round (etcd's `maxWatchersPerSync`).
    pub max_watchers_per_sync: usize,
    /// Most revisions one catch-up response may span, and the window of one
    /// read from the [`EventSource`](crate::EventSource) (etcd's
    /// `watchBatchMaxRevs`, 1000).
    pub catchup_revisions: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            stream_capacity: 128,
            history_revisions: 4096,
            history_bytes: 64 << 20,
            max_request_bytes: 3 << 19,
            progress_notify_interval: Duration::from_secs(600),
            resync_interval: Duration::from_millis(100),
            max_watchers_per_sync: 512,
            catchup_revisions: 1000,
        }
    }
}

/// A [`WatchConfig`] that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A count or size that must be positive is zero.
    #[error("watch config: {0} must be greater than zero")]
    Zero(&'static str),
}

impl WatchConfig {
    /// Checks that every knob has a usable value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let checks: [(&'static str, bool); 8] = [
            ("stream-capacity", self.stream_capacity == 0),
            ("history-revisions", self.history_revisions == 0),
            ("history-bytes", self.history_bytes == 0),
            ("max-request-bytes", self.max_request_bytes == 0),
            ("progress-notify-interval", self.progress_notify_interval.is_zero()),
            ("resync-interval", self.resync_interval.is_zero()),
            ("max-watchers-per-sync", self.max_watchers_per_sync == 0),
            ("catchup-revisions", self.catchup_revisions == 0),
        ];
        match checks.into_iter().find(|(_, bad)| *bad) {
            Some((name, _)) => Err(ConfigError::Zero(name)),
            None => Ok(()),
        }
    }
}
