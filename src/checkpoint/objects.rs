//! A checkpoint's state as numbered versions in an object store:
//! `<location>_shiftload/<job>/state/<version>.json`.
//!
//! The latest version is the state. A change writes the next number with
//! `PutMode::Create` (S3's `If-None-Match: *`, a hard link on a local file
//! system), which succeeds for exactly one writer; the others read the
//! version that won and apply their change again. That compare-and-swap is
//! all the MongoDB store's fencing rules need (claims, tokens,
//! generations), so both keep the same rules.
//!
//! A version a few behind the latest is deleted, which frees its number: a
//! worker that read a version long ago (paused, or slow) could create the
//! next number again after it was deleted, and its change would land
//! beside the chain rather than on it. So every version records the last
//! [`APPLIED`] changes that built it (their number and a nonce), and a
//! writer whose number is no longer the latest confirms that its nonce is
//! in the latest version's record; if it is not, the change never took
//! effect, its object is removed, and the change is made again.

use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::TryStreamExt;
use object_store::{ObjectStoreExt, PutMode, PutOptions};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::objects::{store_error, Location};

/// Versions older than the latest by this many are deleted.
const KEPT: u64 = 4;

/// How many of the changes that built a version it records.
const APPLIED: usize = 256;

/// A version as stored: the state, and the changes that built it.
#[derive(Default, Serialize, Deserialize)]
struct Doc<S> {
    #[serde(flatten)]
    state: S,
    /// `(version, nonce)` of the latest changes, oldest first.
    #[serde(default, rename = "_applied")]
    applied: Vec<(u64, String)>,
}

/// The numbered versions of one job's state.
pub struct Versions {
    location: Location,
    /// The key prefix of the versions.
    dir: String,
    /// This worker, and its changes so far: a change's nonce.
    owner: String,
    changes: AtomicU64,
}

impl Versions {
    pub fn new(location: &Location, job: &str, owner: &str) -> Self {
        Versions {
            dir: location.key(&format!("_shiftload/{job}/state")),
            location: location.clone(),
            owner: owner.into(),
            changes: AtomicU64::new(0),
        }
    }

    fn key(&self, version: u64) -> String {
        format!("{}/{version:020}.json", self.dir)
    }

    /// Where version `version` is, for messages.
    pub fn describe(&self, version: u64) -> String {
        self.location.object_url(&self.key(version))
    }

    /// Apply `f` to the latest state and write it back as the next
    /// version, unless `f` left it unchanged; when another worker changed
    /// it first, `f` runs again on theirs.
    pub async fn change<S, T>(&self, mut f: impl FnMut(&mut S) -> T) -> Result<T>
    where
        S: Serialize + DeserializeOwned + Default,
    {
        loop {
            let (version, mut doc) = self.read::<S>().await?;
            let before = serde_json::to_vec(&doc.state).expect("serializable");
            let out = f(&mut doc.state);
            let after = serde_json::to_vec(&doc.state).expect("serializable");
            if after == before || self.commit(version, doc).await? {
                return Ok(out);
            }
        }
    }

    /// The latest version and its document (`0` and the default: none yet).
    async fn read<S: DeserializeOwned + Default>(&self) -> Result<(u64, Doc<S>)> {
        let (version, bytes) = self.latest().await?;
        let Some(bytes) = bytes else {
            return Ok((0, Doc::default()));
        };
        let doc = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Checkpoint(format!("{}: unreadable: {e}", self.describe(version)))
        })?;
        Ok((version, doc))
    }

    /// Write `doc`, read as `version`, as the next version; false when
    /// another worker changed the state first (nothing of `doc` applies).
    async fn commit<S: Serialize + DeserializeOwned + Default>(
        &self,
        version: u64,
        mut doc: Doc<S>,
    ) -> Result<bool> {
        let next = version + 1;
        let nonce = format!(
            "{}#{}",
            self.owner,
            self.changes.fetch_add(1, Ordering::Relaxed)
        );
        doc.applied.push((next, nonce.clone()));
        let excess = doc.applied.len().saturating_sub(APPLIED);
        doc.applied.drain(..excess);
        let bytes = serde_json::to_vec(&doc).expect("serializable");
        if !self.write(next, bytes).await? {
            return Ok(false);
        }
        self.confirm::<S>(next, &nonce).await
    }

    /// Whether the change `nonce`, written as `version`, is in the chain
    /// of versions: `version` is the latest, or the latest records it.
    async fn confirm<S: DeserializeOwned + Default>(
        &self,
        version: u64,
        nonce: &str,
    ) -> Result<bool> {
        let (latest, doc) = self.read::<S>().await?;
        if latest == version || doc.applied.iter().any(|(v, n)| *v == version && n == nonce) {
            return Ok(true);
        }
        // The record reaches back to `version` and another change has it:
        // this number had been written and deleted before ours.
        if doc.applied.first().is_some_and(|(v, _)| *v <= version) {
            self.remove(version).await;
            return Ok(false);
        }
        Err(Error::Checkpoint(format!(
            "cannot tell whether {} took effect: the state changed {} times since; run the job \
             again",
            self.describe(version),
            latest - version
        )))
    }

    async fn remove(&self, version: u64) {
        let Ok(path) = self.location.path_of(&self.key(version)) else {
            return;
        };
        if let Err(e) = self.location.store().delete(&path).await {
            if !matches!(e, object_store::Error::NotFound { .. }) {
                tracing::debug!(error = %e, "an old checkpoint version stays");
            }
        }
    }

    /// The latest version and its bytes (`0` and `None`: no state yet).
    async fn latest(&self) -> Result<(u64, Option<Vec<u8>>)> {
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
    async fn write(&self, version: u64, bytes: Vec<u8>) -> Result<bool> {
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
            self.remove(version - KEPT).await;
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

    /// A worker that read a version, then waited while others changed the
    /// state past it (and its successor's number was deleted), creates
    /// that number anew: its change must not count as made.
    /// A state to change: entries in the order they were made.
    #[derive(Default, serde::Serialize, serde::Deserialize)]
    struct Log {
        entries: Vec<String>,
    }

    #[tokio::test]
    async fn a_change_read_long_ago_is_refused_though_its_number_was_freed() {
        let dir = tempfile::tempdir().unwrap();
        let slow = super::Versions::new(&location(&dir), "j", "slow");
        let fast = super::Versions::new(&location(&dir), "j", "fast");
        fast.change(|s: &mut Log| s.entries.push("first".into()))
            .await
            .unwrap();
        let (read, mut doc) = slow.read::<Log>().await.unwrap();
        for i in 0..(super::KEPT + 2) {
            fast.change(|s: &mut Log| s.entries.push(format!("fast {i}")))
                .await
                .unwrap();
        }
        let gone = dir
            .path()
            .join(format!("_shiftload/j/state/{:020}.json", read + 1));
        assert!(
            !gone.exists(),
            "the number after the slow read is free again"
        );
        doc.state.entries.push("slow".into());
        assert!(
            !slow.commit(read, doc).await.unwrap(),
            "a lost change was taken as made"
        );
        assert!(!gone.exists(), "the stray version is removed");
        // Made again on the latest state, it lands after the others.
        slow.change(|s: &mut Log| s.entries.push("slow".into()))
            .await
            .unwrap();
        let (_, doc) = fast.read::<Log>().await.unwrap();
        let mut want = vec!["first".to_string()];
        want.extend((0..(super::KEPT + 2)).map(|i| format!("fast {i}")));
        want.push("slow".into());
        assert_eq!(doc.state.entries, want);
    }
}
