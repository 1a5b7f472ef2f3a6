//! The physical half of a compaction: removing, off the write path, the
//! revisions the index no longer points to. Runs on its own thread in
//! batches; the last batch records the compaction as finished, so a
//! compaction interrupted by a crash is resumed when the store opens.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rocksdb::{DB, IteratorMode, ReadOptions, WriteBatch};

use crate::revision::Revision;
use crate::store::{CF_KV, CF_META, KeepSet, META_FINISHED_COMPACT};

/// One scheduled compaction.
pub(crate) struct CompactionJob {
    pub rev: i64,
    /// Revisions at or below `rev` that stay.
    pub keep: KeepSet,
    /// Told when the job is done.
    pub done: Option<mpsc::Sender<()>>,
}

pub(crate) struct Compactor;

/// Pause between batches so the compaction never hogs RocksDB.
const PAUSE: Duration = Duration::from_millis(1);

impl Compactor {
    pub fn spawn(db: Arc<DB>, batch_limit: usize) -> (mpsc::Sender<CompactionJob>, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel::<CompactionJob>();
        let handle = std::thread::Builder::new()
            .name("mvcc-compactor".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    match run(&db, &job, batch_limit.max(1)) {
                        Ok(removed) => tracing::info!(rev = job.rev, removed, "finished compaction"),
                        Err(e) => tracing::error!(rev = job.rev, error = %e, "compaction failed"),
                    }
                    if let Some(done) = job.done {
                        let _ = done.send(());
                    }
                }
            })
            .expect("spawn compactor thread");
        (tx, handle)
    }
}

fn run(db: &DB, job: &CompactionJob, batch_limit: usize) -> Result<usize, rocksdb::Error> {
    let kv = db.cf_handle(CF_KV).expect("kv column family exists");
    let meta = db.cf_handle(CF_META).expect("meta column family exists");
    let mut opts = ReadOptions::default();
    opts.set_iterate_upper_bound(Revision::new(job.rev + 1, 0).to_bytes().to_vec());
    let mut batch = WriteBatch::default();
    let mut removed = 0;
    for item in db.iterator_cf_opt(&kv, opts, IteratorMode::Start) {
        let (k, _) = item?;
        let Some((rev, _)) = Revision::from_bytes(&k) else { continue };
        if job.keep.contains(&rev) {
            continue;
        }
        batch.delete_cf(&kv, &k);
        removed += 1;
        if batch.len() >= batch_limit {
            db.write(std::mem::take(&mut batch))?;
            fail::fail_point!("compaction-batch-written");
            std::thread::sleep(PAUSE);
        }
    }
    fail::fail_point!("compaction-before-finish");
    batch.put_cf(&meta, META_FINISHED_COMPACT, job.rev.to_be_bytes());
    db.write(batch)?;
    Ok(removed)
}
