//! openraft's storage conformance suite against the WAL log store.

use keelson_raftstore::TypeConfig;
use keelson_raftstore::WalLogStore;
use openraft::StorageError;
use openraft::testing::log::StoreBuilder;
use openraft::testing::log::Suite;
use openraft::type_config::TypeConfigExt;
use tempfile::TempDir;

use crate::fixture::MemStateMachine;
use crate::fixture::small_segments;

/// Builds each store in its own temp dir, with small segments so that the
/// suite's logs span several of them.
struct WalStoreBuilder;

impl StoreBuilder<TypeConfig, WalLogStore, MemStateMachine, TempDir> for WalStoreBuilder {
    async fn build(&self) -> Result<(TempDir, WalLogStore, MemStateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::write(TypeConfig::err_from_error(&e)))?;
        let store = WalLogStore::open(dir.path(), small_segments())
            .map_err(|e| StorageError::write(TypeConfig::err_from_error(&e)))?;
        Ok((dir, store, MemStateMachine::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes() {
    Suite::test_all(WalStoreBuilder).await.expect("openraft storage suite");
}
