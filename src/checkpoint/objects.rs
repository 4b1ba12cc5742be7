//! A checkpoint's state as numbered versions in an object store:
//! `<location>_shiftload/<job>/state/<version>.json`.
//!
//! The latest version is the state. A change writes the next number with
//! `PutMode::Create` (S3's `If-None-Match: *`, a hard link on a local file
//! system), which succeeds for exactly one writer; the others read the
//! version that won and apply their change again. That compare-and-swap is
//! all the MongoDB store's fencing rules need (claims, tokens,
//! generations), so both keep the same rules. A version a few behind the
//! latest is deleted; a reader that finds its version gone reads again.

use futures_util::TryStreamExt;
use object_store::{ObjectStoreExt, PutMode, PutOptions};

use crate::error::{Error, Result};
use crate::objects::{store_error, Location};

/// Versions older than the latest by this many are deleted.
const KEPT: u64 = 4;

/// The numbered versions of one job's state.
pub struct Versions {
    location: Location,
    /// The key prefix of the versions.
    dir: String,
}

impl Versions {
    pub fn new(location: &Location, job: &str) -> Self {
        Versions {
            dir: location.key(&format!("_shiftload/{job}/state")),
            location: location.clone(),
        }
    }

    fn key(&self, version: u64) -> String {
        format!("{}/{version:020}.json", self.dir)
    }

    /// Where version `version` is, for messages.
    pub fn describe(&self, version: u64) -> String {
        self.location.object_url(&self.key(version))
    }

    /// The latest version and its bytes (`0` and `None`: no state yet).
    pub async fn latest(&self) -> Result<(u64, Option<Vec<u8>>)> {
        let store = self.location.store();
        loop {
            let dir = self.location.path_of(&self.dir)?;
            let listed: Vec<_> =
                store.list(Some(&dir)).try_collect().await.map_err(|e| {
                    store_error(&format!("cannot list {}", self.location.url("")), e)
                })?;
            let latest = listed
                .iter()
                .filter_map(|m| {
                    m.location
                        .filename()?
                        .strip_suffix(".json")?
                        .parse::<u64>()
                        .ok()
                })
                .max();
            let Some(version) = latest else {
                return Ok((0, None));
            };
            let path = self.location.path_of(&self.key(version))?;
            match store.get(&path).await {
                Ok(got) => {
                    let bytes = got.bytes().await.map_err(|e| {
                        store_error(&format!("cannot read {}", self.describe(version)), e)
                    })?;
                    return Ok((version, Some(bytes.to_vec())));
                }
                // Deleted since the listing: newer versions exist.
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => {
                    return Err(store_error(
                        &format!("cannot read {}", self.describe(version)),
                        e,
                    ))
                }
            }
        }
    }

    /// Write `version` unless it exists; false when another worker wrote
    /// it first.
    pub async fn write(&self, version: u64, bytes: Vec<u8>) -> Result<bool> {
        let store = self.location.store();
        let path = self.location.path_of(&self.key(version))?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match store.put_opts(&path, bytes.into(), opts).await {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => return Ok(false),
            Err(e @ object_store::Error::NotImplemented { .. }) => {
                return Err(Error::config(
                    self.location.config_key,
                    format!(
                        "{} cannot create an object only if it is absent ({e}); the export's \
                         checkpoint needs it",
                        self.location.url("")
                    ),
                ))
            }
            Err(e) => {
                return Err(store_error(
                    &format!("cannot write {}", self.describe(version)),
                    e,
                ))
            }
        }
        if version > KEPT {
            let old = self.location.path_of(&self.key(version - KEPT))?;
            if let Err(e) = store.delete(&old).await {
                if !matches!(e, object_store::Error::NotFound { .. }) {
                    tracing::debug!(error = %e, "an old checkpoint version stays");
                }
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::{Begin, CheckpointStore, MemoryStore, PartitionStats};
    use crate::objects::Location;
    use crate::plan::{Planned, Range};

    fn planned(n: i64) -> Vec<Planned> {
        (0..n)
            .map(|i| {
                Planned::range(Range {
                    lo: i * 10,
                    hi: i * 10 + 10,
                    null: false,
                })
            })
            .collect()
    }

    fn location(dir: &tempfile::TempDir) -> Location {
        let url = format!("file://{}/", dir.path().display());
        Location::open(&url, None, None, "export.location").unwrap()
    }

    /// Four workers, each its own store over the same directory, share
    /// the partitions: every one is claimed and done exactly once, and the
    /// generation completes once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn workers_on_one_location_take_each_partition_once() {
        let dir = tempfile::tempdir().unwrap();
        let lease = Duration::from_secs(30);
        let mut tasks = Vec::new();
        for w in 0..4 {
            let store = MemoryStore::in_objects(&location(&dir), "j", &format!("w{w}"), lease);
            tasks.push(tokio::spawn(async move {
                let store: Arc<dyn CheckpointStore> = Arc::new(store);
                let generation = match store.begin("fp", false).await.unwrap() {
                    Begin::Plan { previous } => store
                        .commit_plan("fp", previous, &planned(24), None)
                        .await
                        .unwrap(),
                    Begin::Resume { generation } => generation,
                };
                let mut mine = Vec::new();
                while let Some(claim) = store.claim(generation).await.unwrap() {
                    let stats = PartitionStats {
                        rows: 1,
                        ..Default::default()
                    };
                    store.done(&claim, &stats).await.unwrap();
                    mine.push(claim.work.range.lo);
                }
                (mine, store.complete_if_done(generation).await.unwrap())
            }));
        }
        let mut all = Vec::new();
        let mut completed = 0;
        for t in tasks {
            let (mine, complete) = t.await.unwrap();
            completed += complete as usize;
            all.extend(mine);
        }
        // The last to finish sees the generation complete.
        assert!(completed >= 1);
        all.sort();
        assert_eq!(all, (0..24).map(|i| i * 10).collect::<Vec<_>>());
        let reader = MemoryStore::in_objects(&location(&dir), "j", "reader", lease);
        assert!(reader.complete_if_done(1).await.unwrap());
        let status = reader.status().await.unwrap().unwrap();
        assert_eq!(status.generation, 1);
        assert_eq!(status.history.len(), 1, "completed more than once");
        // Only the last few versions are kept.
        let versions = std::fs::read_dir(dir.path().join("_shiftload/j/state")).unwrap();
        assert!(versions.count() <= super::KEPT as usize + 1);
    }

    /// A restart under a worker fences it: its claim can change nothing,
    /// and it cannot complete the new generation.
    #[tokio::test]
    async fn a_worker_of_an_older_run_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let lease = Duration::from_secs(30);
        let old = MemoryStore::in_objects(&location(&dir), "j", "old", lease);
        let Begin::Plan { previous } = old.begin("fp", false).await.unwrap() else {
            panic!("a fresh job is planned")
        };
        let generation = old
            .commit_plan("fp", previous, &planned(2), None)
            .await
            .unwrap();
        let claim = old.claim(generation).await.unwrap().unwrap();
        let new = MemoryStore::in_objects(&location(&dir), "j", "new", lease);
        let Begin::Plan { previous } = new.begin("fp", true).await.unwrap() else {
            panic!("a restart plans again")
        };
        let next = new
            .commit_plan("fp", previous, &planned(2), None)
            .await
            .unwrap();
        assert_eq!(next, generation + 1);
        assert!(old.done(&claim, &PartitionStats::default()).await.is_err());
        assert!(old.complete_if_done(generation).await.is_err());
        let status = new.status().await.unwrap().unwrap();
        assert_eq!(status.count(super::super::PartitionState::Done), 0);
        assert_eq!(status.count(super::super::PartitionState::Pending), 2);
    }
}
