//! The Parquet sink: a job's result as Parquet parts in an object store
//! (`shiftload export`).
//!
//! Each partition writes its own parts, `<location><stem>_part_<nn>.parquet`
//! (the stem from the partition's key, so parts sort as the keys do),
//! closing one at `export.max_file_size` and beginning the next. A part is
//! written under `<location>_shiftload/<job>/tmp/` and renamed to its name
//! only when the partition's last part is complete, so no half-written part
//! is ever listed under the location; a partition written again (a retry,
//! a resumed run) writes the same names, and removes parts of an earlier
//! attempt beyond its own count. The parts of a finished partition are
//! recorded beside them (`_shiftload/<job>/parts/<stem>.json`), which the
//! manifest is made from once every partition is done.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Field, Schema, SchemaRef};
use async_trait::async_trait;
use object_store::buffered::BufWriter;
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::async_writer::AsyncArrowWriter;
use parquet::basic::{Compression as Codec, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde::{Deserialize, Serialize};

use super::{PartitionSink, Sink, WriteStats};
use crate::config::{Compression, ExportConfig, MappingConfig};
use crate::deadletter::Reject;
use crate::error::{Class, Error, Result};
use crate::memory::{BatchPermit, Budget};
use crate::objects::{store_error, Location};

mod manifest;
pub use manifest::{manifest, write_manifest, Manifest};

/// A part written by a finished partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// The object key.
    pub key: String,
    pub rows: u64,
    pub bytes: u64,
}

/// Parts written under an export location.
pub struct ParquetSink {
    shared: Arc<Shared>,
    attempts: AtomicU64,
}

/// What every partition's writer reads.
struct Shared {
    location: Location,
    cfg: ExportConfig,
    job: String,
    /// Which input columns are written, and the schema they are written as.
    columns: Vec<usize>,
    schema: SchemaRef,
    row_group_bytes: usize,
}

fn parquet_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Query {
        system: "Parquet",
        message: crate::redact::scrub(&format!("{what}: {e}")),
        code: None,
        class: Class::Transient,
    }
}

/// The stem of a partition's part names: the last element of its id
/// (`job/generation/<lo>` or `…/null<lo>`), as 16 hex digits ordered as
/// the keys are (`null` keys last).
pub fn part_stem(partition: &str) -> String {
    let last = partition.rsplit('/').next().unwrap_or(partition);
    match last.strip_prefix("null") {
        Some(_) => "null".into(),
        None => match last.parse::<i64>() {
            Ok(lo) => format!("{:016x}", (lo as u64) ^ (1 << 63)),
            Err(_) => last
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect(),
        },
    }
}

impl ParquetSink {
    /// The sink for batches of `schema` (the source's projected result):
    /// the mapping's columns, under the names it gives them.
    pub fn new(
        location: Location,
        cfg: &ExportConfig,
        job: &str,
        mapping: &MappingConfig,
        schema: &SchemaRef,
        budget: &Budget,
    ) -> Result<Self> {
        let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let used = mapping.columns_used(&names);
        let mut columns = Vec::new();
        let mut fields = Vec::new();
        for (i, field) in schema.fields().iter().enumerate() {
            if !used.contains(field.name()) {
                continue;
            }
            let name = mapping.rename.get(field.name()).unwrap_or(field.name());
            if fields.iter().any(|f: &Field| f.name() == name) {
                return Err(Error::config(
                    "mapping.rename",
                    format!("two columns would be written as the Parquet column `{name}`"),
                ));
            }
            fields.push(field.as_ref().clone().with_name(name.clone()));
            columns.push(i);
        }
        let shared = Shared {
            location,
            cfg: cfg.clone(),
            job: job.to_string(),
            columns,
            schema: Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())),
            row_group_bytes: budget.batch_bytes(),
        };
        Ok(ParquetSink {
            shared: Arc::new(shared),
            attempts: AtomicU64::new(0),
        })
    }

    /// The location written to.
    pub fn location(&self) -> &Location {
        &self.shared.location
    }

    /// The schema the parts are written with.
    pub fn schema(&self) -> &SchemaRef {
        &self.shared.schema
    }

    /// The parts a finished partition recorded; `None` when it recorded
    /// none.
    pub async fn recorded(&self, partition: &str) -> Result<Option<Vec<Part>>> {
        let sh = &self.shared;
        let key = sh.record_key(&part_stem(partition));
        let url = sh.location.object_url(&key);
        match sh.location.store().get(&sh.location.path_of(&key)?).await {
            Ok(got) => {
                let bytes = got
                    .bytes()
                    .await
                    .map_err(|e| store_error(&format!("cannot read {url}"), e))?;
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| Error::Checkpoint(format!("{url}: unreadable: {e}")))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_error(&format!("cannot read {url}"), e)),
        }
    }

    /// The job's name under `_shiftload/`.
    pub fn job(&self) -> &str {
        &self.shared.job
    }
}

impl Shared {
    fn properties(&self) -> WriterProperties {
        let codec = match self.cfg.compression {
            Compression::Zstd => Codec::ZSTD(ZstdLevel::default()),
            Compression::Snappy => Codec::SNAPPY,
            Compression::None => Codec::UNCOMPRESSED,
        };
        WriterProperties::builder()
            .set_compression(codec)
            .set_dictionary_enabled(true)
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_row_count(Some(self.cfg.row_group_rows))
            .set_max_row_group_bytes(Some(self.row_group_bytes))
            .set_created_by(format!("shiftload {}", env!("CARGO_PKG_VERSION")))
            .build()
    }

    /// Where the record of a partition's parts is kept.
    pub fn record_key(&self, stem: &str) -> String {
        self.location
            .key(&format!("_shiftload/{}/parts/{stem}.json", self.job))
    }

    fn part_key(&self, stem: &str, n: usize) -> String {
        self.location.key(&format!("{stem}_part_{n:02}.parquet"))
    }

    fn temp_key(&self, stem: &str, n: usize, nonce: &str) -> String {
        self.location.key(&format!(
            "_shiftload/{}/tmp/{stem}_part_{n:02}.{nonce}.parquet",
            self.job
        ))
    }
}

#[async_trait]
impl Sink for ParquetSink {
    async fn open(&self, partition: &str, _schema: SchemaRef) -> Result<Box<dyn PartitionSink>> {
        let attempt = self.attempts.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(PartitionParts {
            stem: part_stem(partition),
            nonce: format!("{:x}-{attempt}", std::process::id()),
            current: None,
            written: Vec::new(),
            stats: WriteStats::default(),
            sink: self.shared.clone(),
        }))
    }

    /// A partition written again writes the same part names with the same
    /// rows.
    fn idempotent(&self) -> bool {
        true
    }
}

/// A part being written.
struct Open {
    writer: AsyncArrowWriter<BufWriter>,
    temp: String,
    rows: u64,
}

/// One attempt at one partition: its parts, written under temporary names
/// until [`PartitionSink::finish`].
struct PartitionParts {
    sink: Arc<Shared>,
    stem: String,
    /// This attempt's own temporary names.
    nonce: String,
    current: Option<Open>,
    /// Parts closed so far: temporary key, rows, bytes.
    written: Vec<(String, u64, u64)>,
    stats: WriteStats,
}

impl PartitionParts {
    fn begin(&mut self) -> Result<&mut Open> {
        if self.current.is_none() {
            let sh = &self.sink;
            let temp = sh.temp_key(&self.stem, self.written.len(), &self.nonce);
            let path = sh.location.path_of(&temp)?;
            let out = BufWriter::new(sh.location.store(), path);
            let writer = AsyncArrowWriter::try_new(out, sh.schema.clone(), Some(sh.properties()))
                .map_err(|e| parquet_error("cannot begin a Parquet part", e))?;
            self.current = Some(Open {
                writer,
                temp,
                rows: 0,
            });
        }
        Ok(self.current.as_mut().expect("just begun"))
    }

    /// Close the part being written (a complete object under its
    /// temporary name).
    async fn close(&mut self) -> Result<()> {
        let Some(open) = self.current.take() else {
            return Ok(());
        };
        let url = self.sink.location.object_url(&open.temp);
        open.writer
            .close()
            .await
            .map_err(|e| parquet_error(&format!("cannot write {url}"), e))?;
        let meta = self
            .sink
            .location
            .store()
            .head(&self.sink.location.path_of(&open.temp)?)
            .await
            .map_err(|e| store_error(&format!("cannot read back {url}"), e))?;
        self.stats.bytes += meta.size;
        self.stats.requests += 1;
        self.written.push((open.temp, open.rows, meta.size));
        Ok(())
    }

    /// Rename the closed parts to their names, remove parts of an earlier
    /// attempt beyond them, and record them.
    async fn commit(&mut self) -> Result<()> {
        let sh = self.sink.clone();
        let store = sh.location.store();
        let mut parts = Vec::with_capacity(self.written.len());
        for (n, (temp, rows, bytes)) in self.written.iter().enumerate() {
            let key = sh.part_key(&self.stem, n);
            let (from, to) = (sh.location.path_of(temp)?, sh.location.path_of(&key)?);
            store.rename(&from, &to).await.map_err(|e| {
                store_error(
                    &format!("cannot commit {}", sh.location.object_url(&key)),
                    e,
                )
            })?;
            parts.push(Part {
                key,
                rows: *rows,
                bytes: *bytes,
            });
        }
        for n in parts.len().. {
            let stale = sh.location.path_of(&sh.part_key(&self.stem, n))?;
            match store.head(&stale).await {
                Ok(_) => sh.location.delete(&[stale.to_string()]).await?,
                Err(object_store::Error::NotFound { .. }) => break,
                Err(e) => return Err(store_error("cannot look for stale parts", e)),
            }
        }
        let record = sh.record_key(&self.stem);
        let body = serde_json::to_vec(&parts).expect("serializable");
        store
            .put(&sh.location.path_of(&record)?, PutPayload::from(body))
            .await
            .map_err(|e| {
                store_error(
                    &format!("cannot write {}", sh.location.object_url(&record)),
                    e,
                )
            })?;
        self.written.clear();
        Ok(())
    }
}

#[async_trait]
impl PartitionSink for PartitionParts {
    async fn write(
        &mut self,
        batch: RecordBatch,
        permit: BatchPermit,
        rejects: Vec<(usize, Reject)>,
    ) -> Result<u64> {
        if let Some((_, reject)) = rejects.first() {
            return Err(Error::Value {
                column: reject.column.clone(),
                row: format!("row {} of its partition ({})", reject.row, reject.key),
                message: format!("{} (an export has no dead-letter file)", reject.reason),
            });
        }
        let sh = self.sink.clone();
        let columns = sh
            .columns
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        let out = RecordBatch::try_new(sh.schema.clone(), columns)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let open = self.begin()?;
        let before = open.writer.bytes_written() + open.writer.in_progress_size();
        open.writer
            .write(&out)
            .await
            .map_err(|e| parquet_error("cannot write a Parquet part", e))?;
        open.rows += out.num_rows() as u64;
        let after = open.writer.bytes_written() + open.writer.in_progress_size();
        let full = after as u64 >= sh.cfg.max_file_size.0;
        self.stats.inserted += out.num_rows() as u64;
        // The rows are in the part's encoders now, not in the batch.
        drop(permit);
        if full {
            self.close().await?;
        }
        Ok(after.saturating_sub(before) as u64)
    }

    async fn finish(&mut self, complete: bool) -> Result<()> {
        if !complete {
            // Never published: the temporaries go (what is left of them
            // is swept when the export completes).
            let mut temps: Vec<String> = self.written.drain(..).map(|(t, _, _)| t).collect();
            if let Some(open) = self.current.take() {
                // An upload begun is abandoned, not completed.
                let _ = open.writer.into_inner().abort().await;
                temps.push(open.temp);
            }
            if let Err(e) = self.sink.location.delete(&temps).await {
                tracing::debug!(error = %e, "temporary parts stay until the export completes");
            }
            return Ok(());
        }
        self.close().await?;
        self.commit().await
    }

    fn stats(&self) -> WriteStats {
        self.stats
    }
}
