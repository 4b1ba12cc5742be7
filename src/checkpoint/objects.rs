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
