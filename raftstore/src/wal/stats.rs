//! What the WAL has done: appends, fsyncs and how long the fsyncs took.
//!
//! The fsync histogram uses the buckets of etcd's
//! `etcd_disk_wal_fsync_duration_seconds` (1 ms doubling to 8.192 s), so it
//! can be exported under that name and read by existing dashboards.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Upper bounds, in seconds, of the fsync duration buckets (etcd's
/// `prometheus.ExponentialBuckets(0.001, 2, 14)`); a last, unbounded bucket
/// follows them.
pub const FSYNC_BUCKETS_SECONDS: [f64; 14] =
    [0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192];

/// The live counters, shared between the writer thread and readers.
#[derive(Debug, Default)]
pub(crate) struct WalCounters {
    appends: AtomicU64,
    entries: AtomicU64,
    bytes: AtomicU64,
    fsyncs: AtomicU64,
    fsync_nanos: AtomicU64,
    /// Non-cumulative counts per bucket; the last is the unbounded one.
    fsync_buckets: [AtomicU64; FSYNC_BUCKETS_SECONDS.len() + 1],
}

impl WalCounters {
    pub(crate) fn record_append(&self, entries: u64) {
        self.appends.fetch_add(1, Ordering::Relaxed);
        self.entries.fetch_add(entries, Ordering::Relaxed);
    }

    pub(crate) fn record_write(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn record_fsync(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket =
            FSYNC_BUCKETS_SECONDS.iter().position(|le| secs <= *le).unwrap_or(FSYNC_BUCKETS_SECONDS.len());
        self.fsync_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.fsync_nanos.fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> WalStats {
        let mut cumulative = 0;
        let fsync_buckets = std::array::from_fn(|i| {
            cumulative += self.fsync_buckets[i].load(Ordering::Relaxed);
            cumulative
        });
        WalStats {
            appends: self.appends.load(Ordering::Relaxed),
            entries: self.entries.load(Ordering::Relaxed),
            bytes_written: self.bytes.load(Ordering::Relaxed),
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
            fsync_seconds_sum: Duration::from_nanos(self.fsync_nanos.load(Ordering::Relaxed)).as_secs_f64(),
            fsync_buckets,
        }
    }
}

/// A snapshot of the WAL's counters since it was opened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WalStats {
    /// `append` calls made durable (each completes one `IOFlushed`).
    pub appends: u64,
    /// Entries those calls carried.
    pub entries: u64,
    /// Bytes written to segment files, records and headers.
    pub bytes_written: u64,
    /// `fdatasync` calls on segment files: one per group commit, plus one
    /// when a segment is sealed.
    pub fsyncs: u64,
    /// Total time spent in those fsyncs.
    pub fsync_seconds_sum: f64,
    /// Cumulative fsync counts: `fsync_buckets[i]` fsyncs took at most
    /// [`FSYNC_BUCKETS_SECONDS`]`[i]`; the last element counts them all.
    pub fsync_buckets: [u64; FSYNC_BUCKETS_SECONDS.len() + 1],
}

impl WalStats {
    /// Appends per fsync: how well group commit batches.
    pub fn appends_per_fsync(&self) -> f64 {
        if self.fsyncs == 0 { 0.0 } else { self.appends as f64 / self.fsyncs as f64 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let c = WalCounters::default();
        c.record_fsync(Duration::from_micros(500));
        c.record_fsync(Duration::from_millis(3));
        c.record_fsync(Duration::from_secs(20));
        let s = c.snapshot();
        assert_eq!(s.fsyncs, 3);
        assert_eq!(s.fsync_buckets[0], 1);
        assert_eq!(s.fsync_buckets[1], 1);
        assert_eq!(s.fsync_buckets[2], 2);
        assert_eq!(s.fsync_buckets[13], 2);
        assert_eq!(s.fsync_buckets[14], 3);
        assert!(s.fsync_seconds_sum > 20.0);
    }
}
