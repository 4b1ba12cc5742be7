//! `shiftload export`: the job's result as Parquet parts and a manifest
//! under `[export] location`, through the same partitions, budget and
//! checkpoint rules as a load. With no MongoDB in the job the checkpoint
//! lives beside the parts (`_shiftload/<job>/`), so an export is resumed,
//! and shared by several workers, with nothing but the object store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;

use super::{execute, worker_name, Outcome, RunOptions, RunSummary};
use crate::checkpoint::{CheckpointStore, MemoryStore, PartitionState};
use crate::config::{ExportConfig, JobConfig};
use crate::error::{Error, Result};
use crate::objects::{store_error, Location};
use crate::retry::patient;
use crate::sink::parquet::{manifest, write_manifest, ParquetSink, Part};

/// Export the job's result; a complete export ends with its manifest.
pub async fn export(job: &JobConfig, options: RunOptions) -> Result<RunSummary> {
    let started = Instant::now();
    let Some(cfg) = &job.export else {
        return Err(Error::config(
            "export",
            "the job has no [export] section; add one with `location = \"s3://bucket/prefix/\"`",
        ));
    };
    let location = location(cfg)?;
    let mut prepared = super::prepare(job, false).await?;
    let sink = Arc::new(ParquetSink::new(
        location.clone(),
        cfg,
        &prepared.name,
        &prepared.job.mapping,
        &prepared.source.schema(),
        &prepared.budget,
    )?);
    prepared.sink = Some(sink.clone());
    // A partition written again writes the same parts: resuming is safe.
    prepared.stable_ids = true;
    let store: Arc<dyn CheckpointStore> = Arc::new(store(job, &prepared.name, &worker_name())?);
    let mut summary = execute(&prepared, store.clone(), options, started).await?;
    summary.namespace = location.url("");
    summary.export = true;
    if summary.outcome == Outcome::Complete {
        let parts = finished_parts(store.as_ref(), &sink, &prepared.name).await?;
        let m = manifest(&location, &parts, sink.schema());
        let url = write_manifest(&location, &m).await?;
        sweep(&location, &parts, sink.job()).await?;
        tracing::info!(manifest = %url, parts = parts.len(), rows = m.meta.record_count, "export complete");
        summary.elapsed = started.elapsed();
    }
    Ok(summary)
}

fn location(cfg: &ExportConfig) -> Result<Location> {
    Location::open(
        &cfg.location,
        cfg.region.as_deref(),
        cfg.endpoint.as_deref(),
        "export.location",
    )
}

/// The export's checkpoint, beside its parts, for worker `owner`.
pub(super) fn store(job: &JobConfig, name: &str, owner: &str) -> Result<MemoryStore> {
    let cfg = job
        .export
        .as_ref()
        .ok_or_else(|| Error::config("export", "the job has no [export] section"))?;
    let lease = Duration::from_secs(job.checkpoint.lease_seconds);
    Ok(MemoryStore::in_objects(&location(cfg)?, name, owner, lease))
}

/// The parts of every partition of the complete generation, in key order;
/// a done partition without its record is an error.
async fn finished_parts(
    store: &dyn CheckpointStore,
    sink: &ParquetSink,
    job: &str,
) -> Result<Vec<Part>> {
    let status = patient(|| store.status())
        .await?
        .ok_or_else(|| Error::Checkpoint("the export's checkpoint is gone".into()))?;
    let mut parts = Vec::new();
    for p in &status.partitions {
        let id = p.work.id(job, status.generation);
        if p.state != PartitionState::Done {
            return Err(Error::Checkpoint(format!("partition {id} is {}", p.state)));
        }
        let recorded = patient(|| sink.recorded(&id)).await?.ok_or_else(|| {
            Error::Checkpoint(format!(
                "partition {id} is done but its parts were not recorded"
            ))
        })?;
        let rows: u64 = recorded.iter().map(|r| r.rows).sum();
        if rows != p.rows as u64 {
            return Err(Error::Checkpoint(format!(
                "partition {id} read {} rows but its parts hold {rows}",
                p.rows
            )));
        }
        parts.extend(recorded);
    }
    parts.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(parts)
}

/// Remove what is not the export: parts under the location that the
/// manifest does not list (an earlier export's, or a crashed attempt's),
/// and the temporary parts of attempts that never finished.
async fn sweep(location: &Location, parts: &[Part], job: &str) -> Result<()> {
    let store = location.store();
    let listed = |prefix: String| {
        let store = store.clone();
        async move {
            let path = location.path_of(&prefix)?;
            store
                .list(Some(&path))
                .map_ok(|m| m.location.to_string())
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| {
                    store_error(&format!("cannot list {}", location.object_url(&prefix)), e)
                })
        }
    };
    let top = location.key("");
    let stale: Vec<String> = listed(top.clone())
        .await?
        .into_iter()
        .filter(|k| {
            let rel = k.strip_prefix(&top).unwrap_or(k).trim_start_matches('/');
            !rel.contains('/') && rel.contains("_part_") && rel.ends_with(".parquet")
        })
        .filter(|k| !parts.iter().any(|p| &p.key == k))
        .collect();
    let temps = listed(location.key(&format!("_shiftload/{job}/tmp"))).await?;
    location.delete(&stale).await?;
    location.delete(&temps).await?;
    if !stale.is_empty() {
        tracing::info!(parts = stale.len(), "parts not in the manifest deleted");
    }
    Ok(())
}
