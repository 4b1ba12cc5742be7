//! Staged Parquet parts on S3: Redshift's bulk export path.
//!
//! `UNLOAD ('query') TO 's3://…' FORMAT AS PARQUET` has every Redshift
//! slice write its share of the result in parallel, without a leader-node
//! cursor; shiftload then streams the parts back. Each part is one
//! checkpointed partition: a crash redoes at most one part.
//!
//! A part is read with the `parquet` crate's async reader over
//! `object_store`: only the columns the mapping and the filter need are
//! fetched (projection), batches are sized from the footer's uncompressed
//! bytes per row against the memory budget, and the job's filter is
//! evaluated on each batch with the Arrow kernels ([`crate::filter`]) — the
//! SQL pushdown the PostgreSQL source gets, done on the client because the
//! parts are already written.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetRange};
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::{
    AsyncFileReader, MetadataSuffixFetch, ParquetRecordBatchStream,
};
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use super::SourceBatch;
use crate::config::StagingConfig;
use crate::error::{Class, Error, Result};
use crate::filter::{Expr, Filter};
use crate::memory::Budget;
use crate::sql::{redshift_literal, trim_query};

pub use crate::objects::Location as Staging;

fn s3_err(what: &str, e: impl std::fmt::Display) -> Error {
    crate::objects::store_error(what, e)
}

pub(super) fn s3_error(what: &str, e: impl std::fmt::Display) -> Error {
    s3_err(what, e)
}

fn parquet_err(part: &str, e: impl std::fmt::Display) -> Error {
    Error::Query {
        system: "Parquet",
        message: format!("Parquet part {part}: {e}"),
        code: None,
        // A read may fail on the network as well as on a corrupt part:
        // retried, and the part fails alone after its attempts.
        class: Class::Transient,
    }
}

impl Staging {
    /// Open the location of `cfg` (credentials from the environment).
    pub fn new(cfg: &StagingConfig) -> Result<Self> {
        Staging::open(
            &cfg.location,
            cfg.region.as_deref(),
            cfg.endpoint.as_deref(),
            "source.staging.location",
        )
    }

    /// The rows a part's footer announces.
    pub(super) async fn footer_rows(&self, part: &str) -> Result<u64> {
        let b = self.builder(part).await?;
        Ok(b.metadata().file_metadata().num_rows().max(0) as u64)
    }

    async fn builder(&self, part: &str) -> Result<ParquetRecordBatchStreamBuilder<PartReader>> {
        let reader = PartReader {
            store: self.store.clone(),
            path: self.path_of(part)?,
        };
        ParquetRecordBatchStreamBuilder::new(reader)
            .await
            .map_err(|e| parquet_err(part, e))
    }

    /// The schema of a part, as shiftload maps it.
    pub async fn schema(&self, part: &str) -> Result<SchemaRef> {
        let b = self.builder(part).await?;
        Ok(normalized_schema(b.schema()))
    }
}

/// Reads byte ranges of one part for the Parquet decoder: the footer by a
/// suffix request, then the projected column chunks of each row group.
struct PartReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
}

fn external(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for PartReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(external)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(external)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_via_suffix_and_finish(self)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

impl MetadataSuffixFetch for &mut PartReader {
    fn fetch_suffix(&mut self, suffix: usize) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        let options = GetOptions {
            range: Some(GetRange::Suffix(suffix as u64)),
            ..Default::default()
        };
        async move {
            let got = self
                .store
                .get_opts(&self.path, options)
                .await
                .map_err(external)?;
            got.bytes().await.map_err(external)
        }
        .boxed()
    }
}

/// Arrow types the Parquet reader may produce that the encoder takes in
/// another, lossless form.
fn normalized_type(t: &DataType) -> Option<DataType> {
    Some(match t {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary | DataType::FixedSizeBinary(_) => {
            DataType::Binary
        }
        DataType::Int8 | DataType::UInt8 => DataType::Int16,
        DataType::UInt16 => DataType::Int32,
        DataType::UInt32 => DataType::Int64,
        DataType::UInt64 => DataType::Decimal128(20, 0),
        DataType::Float16 => DataType::Float32,
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) => DataType::Decimal128(*p, *s),
        DataType::Date64 => DataType::Timestamp(arrow_schema::TimeUnit::Millisecond, None),
        _ => return None,
    })
}

fn normalized_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| match normalized_type(f.data_type()) {
                Some(t) => Arc::new(Field::new(f.name(), t, f.is_nullable())),
                None => f.clone(),
            })
            .collect::<Vec<_>>(),
    ))
}

fn normalize(batch: RecordBatch) -> Result<RecordBatch> {
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| normalized_type(f.data_type()).is_some())
    {
        return Ok(batch);
    }
    let schema = normalized_schema(&batch.schema());
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                arrow_cast::cast(c, f.data_type()).map_err(|e| Error::Value {
                    column: f.name().clone(),
                    row: "a Parquet batch".into(),
                    message: e.to_string(),
                })
            }
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(schema, columns).map_err(|e| Error::Internal(e.to_string()))
}

/// Uncompressed bytes per row of the projected columns (`roots`), from
/// the part's footer.
fn bytes_per_row(builder: &ParquetRecordBatchStreamBuilder<PartReader>, roots: &[usize]) -> usize {
    let meta = builder.metadata().clone();
    let rows_total: i64 = meta.row_groups().iter().map(|g| g.num_rows()).sum();
    let leaves: Vec<usize> = {
        let descr = builder.parquet_schema();
        (0..descr.num_columns())
            .filter(|&c| roots.contains(&descr.get_column_root_idx(c)))
            .collect()
    };
    let bytes: i64 = meta
        .row_groups()
        .iter()
        .map(|g| {
            leaves
                .iter()
                .map(|&c| g.column(c).uncompressed_size())
                .sum::<i64>()
        })
        .sum();
    (bytes / rows_total.max(1)).max(1) as usize
}

/// One part being read: projected, filtered batches within the budget.
pub struct ParquetSource {
    part: String,
    stream: ParquetRecordBatchStream<PartReader>,
    filter: Option<Filter>,
    /// Indices (in the read schema) of the columns handed on.
    keep: Vec<usize>,
    schema: SchemaRef,
    budget: Budget,
    rows_seen: u64,
}

impl ParquetSource {
    /// Open `part`, reading only `columns` plus those `filter` reads.
    pub async fn open(
        staging: &Staging,
        part: &str,
        columns: &[String],
        filter: Option<&Expr>,
        budget: &Budget,
        max_rows: usize,
    ) -> Result<Self> {
        let builder = staging.builder(part).await?;
        let file_schema = builder.schema().clone();
        let mut wanted: Vec<String> = columns.to_vec();
        if let Some(f) = filter {
            for c in f.columns() {
                if !wanted.contains(&c) {
                    wanted.push(c);
                }
            }
        }
        let mut roots = Vec::with_capacity(wanted.len());
        for name in &wanted {
            let i = file_schema.index_of(name).map_err(|_| {
                Error::config(
                    "source.staging",
                    format!(
                        "part {part} has no column `{name}` (the job's mapping or filter names it)"
                    ),
                )
            })?;
            roots.push(i);
        }
        roots.sort_unstable();
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots.iter().copied());
        // Rows per batch from the footer: uncompressed bytes per row of the
        // projected columns, against the budget's batch share.
        let per_row = bytes_per_row(&builder, &roots);
        let rows = (budget.batch_bytes() / per_row).clamp(1, max_rows.max(1));
        let stream = builder
            .with_projection(mask)
            .with_batch_size(rows)
            .build()
            .map_err(|e| parquet_err(part, e))?;
        let read_schema = normalized_schema(stream.schema());
        let filter = match filter {
            Some(f) => Some(f.bind(&read_schema)?),
            None => None,
        };
        let keep: Vec<usize> = columns
            .iter()
            .map(|c| read_schema.index_of(c).expect("projected"))
            .collect();
        let schema = Arc::new(
            read_schema
                .project(&keep)
                .map_err(|e| Error::Internal(e.to_string()))?,
        );
        tracing::debug!(
            part,
            rows_per_batch = rows,
            bytes_per_row = per_row,
            "reading part"
        );
        Ok(ParquetSource {
            part: part.to_string(),
            stream,
            filter,
            keep,
            schema,
            budget: budget.clone(),
            rows_seen: 0,
        })
    }

    /// The schema of the batches handed on.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The next batch (filtered, projected) with its permits, or `None`.
    pub async fn next_batch(&mut self) -> Option<Result<SourceBatch>> {
        loop {
            let batch = match self.stream.next().await? {
                Ok(b) => b,
                Err(e) => return Some(Err(parquet_err(&self.part, e))),
            };
            let result = (|| {
                let batch = normalize(batch)?;
                self.rows_seen += batch.num_rows() as u64;
                let batch = match &self.filter {
                    Some(f) => f.apply(&batch)?,
                    None => batch,
                };
                batch
                    .project(&self.keep)
                    .map_err(|e| Error::Internal(e.to_string()))
            })();
            match result {
                Ok(b) if b.num_rows() == 0 => continue,
                Ok(batch) => {
                    let permit = self.budget.acquire(batch.get_array_memory_size()).await;
                    return Some(Ok(SourceBatch {
                        batch,
                        permit,
                        rejects: Vec::new(),
                    }));
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Rows read from the part so far, before the filter.
    pub fn rows_seen(&self) -> u64 {
        self.rows_seen
    }
}

/// The UNLOAD statement that writes `query`'s result as Parquet parts
/// under `url`, with a manifest that lists them and their row counts (the
/// listing is checked against it).
pub fn unload_sql(query: &str, url: &str, iam_role: &str, max_file_size: u64) -> String {
    let mb = (max_file_size / (1 << 20)).clamp(5, 6200);
    format!(
        "UNLOAD ({}) TO {} IAM_ROLE {} FORMAT AS PARQUET MANIFEST VERBOSE MAXFILESIZE {mb} MB",
        redshift_literal(trim_query(query)),
        redshift_literal(url),
        redshift_literal(iam_role),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unload_statement() {
        assert_eq!(
            unload_sql(
                "SELECT * FROM t WHERE s = 'it''s' AND p LIKE 'a\\_b';",
                "s3://b/p/job/1/",
                "arn:aws:iam::1:role/r",
                256 << 20
            ),
            "UNLOAD ('SELECT * FROM t WHERE s = ''it''''s'' AND p LIKE ''a\\\\_b''') \
             TO 's3://b/p/job/1/' IAM_ROLE 'arn:aws:iam::1:role/r' FORMAT AS PARQUET MANIFEST VERBOSE MAXFILESIZE 256 MB"
        );
        assert!(unload_sql("q", "u", "r", 1).ends_with("MAXFILESIZE 5 MB"));
        assert!(unload_sql("q", "u", "r", 1 << 40).ends_with("MAXFILESIZE 6200 MB"));
    }

    #[test]
    fn types_are_normalized() {
        use arrow_array::{Int8Array, StringViewArray};
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int8, true),
            Field::new("b", DataType::Utf8View, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int8Array::from(vec![Some(-3), None])),
                Arc::new(StringViewArray::from(vec![Some("x"), None])),
            ],
        )
        .unwrap();
        let out = normalize(batch).unwrap();
        assert_eq!(out.schema().field(0).data_type(), &DataType::Int16);
        assert_eq!(out.schema().field(1).data_type(), &DataType::Utf8);
        assert_eq!(out.column(0).null_count(), 1);
    }
}
