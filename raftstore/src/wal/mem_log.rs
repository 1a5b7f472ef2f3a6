//! The in-memory image of the WAL: every live entry, the vote, the committed
//! and the purged log id. Reads are served from here; the same transitions
//! are applied when a call arrives and when records are replayed on open, so
//! the two can never disagree.

use std::collections::VecDeque;
use std::ops::Bound;
use std::ops::RangeBounds;

use crate::types::Entry;
use crate::types::LogId;
use crate::types::Vote;
use crate::wal::record::Record;

/// An entry that would leave a hole in, or rewrite, the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry at index {index} does not follow the log (last index {last:?}, purged up to {purged:?})")]
pub struct OutOfOrderEntry {
    pub index: u64,
    pub last: Option<u64>,
    pub purged: Option<u64>,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct MemLog {
    /// Consecutive entries; `entries[0]` has index `first_index()`.
    entries: VecDeque<Entry>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
}

impl MemLog {
    pub(crate) fn vote(&self) -> Option<Vote> {
        self.vote
    }

    pub(crate) fn committed(&self) -> Option<LogId> {
        self.committed
    }

    pub(crate) fn purged(&self) -> Option<LogId> {
        self.purged
    }

    /// The last entry's log id, or the purged log id when there is no entry.
    pub(crate) fn last_log_id(&self) -> Option<LogId> {
        self.entries.back().map(|e| e.log_id).or(self.purged)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.log_id.index)
    }

    /// Checks that `index` may be appended next.
    pub(crate) fn check_next(&self, index: u64, last: Option<u64>) -> Result<(), OutOfOrderEntry> {
        let purged = self.purged.map(|p| p.index);
        let ok = match last {
            Some(last) => Some(index) == last.checked_add(1),
            // An empty log accepts any index past the purge point: openraft
            // may start a log anywhere (after a snapshot, or in its tests).
            None => purged.is_none_or(|p| index > p),
        };
        if ok { Ok(()) } else { Err(OutOfOrderEntry { index, last, purged }) }
    }

    /// Checks that `entries` may be appended in order.
    pub(crate) fn check_append<'a>(
        &self,
        entries: impl IntoIterator<Item = &'a Entry>,
    ) -> Result<(), OutOfOrderEntry> {
        let mut last = self.entries.back().map(|e| e.log_id.index);
        for e in entries {
            self.check_next(e.log_id.index, last)?;
            last = Some(e.log_id.index);
        }
        Ok(())
    }

    /// Appends an entry already checked with [`Self::check_append`].
    pub(crate) fn push(&mut self, entry: Entry) {
        self.entries.push_back(entry);
    }

    pub(crate) fn set_vote(&mut self, vote: Vote) {
        self.vote = Some(vote);
    }

    pub(crate) fn set_committed(&mut self, committed: Option<LogId>) {
        self.committed = committed;
    }

    /// Deletes every entry after `after` (all of them for `None`).
    pub(crate) fn truncate_after(&mut self, after: Option<&LogId>) {
        let keep = match (after, self.first_index()) {
            (_, None) | (None, _) => 0,
            (Some(after), Some(first)) => (after.index + 1).saturating_sub(first) as usize,
        };
        self.entries.truncate(keep);
    }

    /// Deletes every entry up to `upto`, inclusive, and remembers it as the
    /// purge point. A purge point behind the current one changes nothing.
    pub(crate) fn purge(&mut self, upto: LogId) {
        if self.purged.is_some_and(|p| p.index >= upto.index) {
            return;
        }
        while self.entries.front().is_some_and(|e| e.log_id.index <= upto.index) {
            self.entries.pop_front();
        }
        self.purged = Some(upto);
    }

    /// Replays one record read from disk.
    pub(crate) fn replay(&mut self, record: Record) -> Result<(), OutOfOrderEntry> {
        match record {
            Record::Header(h) => {
                // The header holds the state as of the segment's creation,
                // which includes everything before it.
                self.vote = h.vote;
                self.committed = h.committed;
                if let Some(p) = h.purged {
                    self.purge(p);
                }
            }
            Record::Entry(e) => {
                let last = self.entries.back().map(|e| e.log_id.index);
                self.check_next(e.log_id.index, last)?;
                self.entries.push_back(e);
            }
            Record::Vote(v) => self.vote = Some(v),
            Record::Committed(c) => self.committed = c,
            Record::Truncate(after) => self.truncate_after(after.as_ref()),
            Record::Purge(upto) => self.purge(upto),
        }
        Ok(())
    }

    /// Clones the entries within `range`.
    pub(crate) fn range(&self, range: impl RangeBounds<u64>) -> Vec<Entry> {
        let Some(first) = self.first_index() else { return Vec::new() };
        let last_excl = first + self.entries.len() as u64;
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => first,
        }
        .max(first);
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => last_excl,
        }
        .min(last_excl);
        if start >= end {
            return Vec::new();
        }
        self.entries.range((start - first) as usize..(end - first) as usize).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryPayload;
    use crate::types::LeaderId;

    fn id(index: u64) -> LogId {
        LogId::new(LeaderId { term: 1, node_id: 0 }, index)
    }

    fn blank(index: u64) -> Entry {
        Entry { log_id: id(index), payload: EntryPayload::Blank }
    }

    fn log(indexes: std::ops::RangeInclusive<u64>) -> MemLog {
        let mut log = MemLog::default();
        for i in indexes {
            log.replay(Record::Entry(blank(i))).unwrap();
        }
        log
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    #[test]
    fn range_clamps_to_what_the_log_holds() {
        let log = log(3..=7);
        assert_eq!(indexes(&log.range(..)), vec![3, 4, 5, 6, 7]);
        assert_eq!(indexes(&log.range(0..5)), vec![3, 4]);
        assert_eq!(indexes(&log.range(6..=100)), vec![6, 7]);
        assert!(log.range(5..5).is_empty());
        assert!(log.range(8..).is_empty());
        assert!(MemLog::default().range(..).is_empty());
    }

    #[test]
    fn holes_and_rewrites_are_refused() {
        let mut log = log(1..=3);
        assert!(log.replay(Record::Entry(blank(5))).is_err());
        assert!(log.replay(Record::Entry(blank(3))).is_err());
        log.purge(id(10));
        assert_eq!(log.last_log_id(), Some(id(10)));
        assert!(log.replay(Record::Entry(blank(10))).is_err());
        log.replay(Record::Entry(blank(11))).unwrap();
    }

    #[test]
    fn truncate_and_purge() {
        let mut log = log(0..=9);
        log.truncate_after(Some(&id(5)));
        assert_eq!(indexes(&log.range(..)), vec![0, 1, 2, 3, 4, 5]);
        log.truncate_after(Some(&id(50)));
        assert_eq!(log.len(), 6);
        log.purge(id(2));
        assert_eq!(indexes(&log.range(..)), vec![3, 4, 5]);
        log.purge(id(1));
        assert_eq!(log.purged(), Some(id(2)));
        log.truncate_after(None);
        assert_eq!(log.len(), 0);
        assert_eq!(log.last_log_id(), Some(id(2)));
    }
}
