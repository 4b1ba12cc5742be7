//! The job file: what to read, where to write it, and how rows become
//! documents.
//!
//! Every struct denies unknown keys, so a typo is an error that names the key
//! rather than a silently ignored setting. The doc comments on the fields are
//! the reference documentation: they feed `schemas/job.schema.json`
//! (`shiftload schema`).
//!
//! String values may refer to environment variables as `${NAME}`, so that
//! secrets stay out of the file; `$$` is a literal `$`.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::{Error, Result};

mod env;
mod export;
use env::expand;
mod fingerprint;
mod iam;
mod incremental;
mod mapping;
mod toml_error;
pub use export::{Compression, ExportConfig};
pub use fingerprint::fingerprint;
pub use iam::{IamConfig, IamSetting, SourceUrl};
pub use incremental::{IncrementalConfig, Lookback, ReconcileConfig};
pub use mapping::*;

/// A transfer job: one query, one target collection.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// Where rows come from.
    pub source: SourceConfig,
    /// Where documents go (`shiftload run`). A job with an `[export]`
    /// may have none.
    #[serde(default)]
    pub target: TargetConfig,
    /// Where Parquet parts go (`shiftload export`).
    #[serde(default)]
    pub export: Option<ExportConfig>,
    /// How result columns become document fields.
    #[serde(default)]
    pub mapping: MappingConfig,
    /// The job's name in the checkpoint collection. Default: the job file's
    /// name without `.toml`.
    #[serde(default)]
    pub name: Option<String>,
    /// Cut the query into key ranges, checkpointed one by one (resumable).
    /// Without it the whole query is one partition.
    #[serde(default)]
    pub partition: Option<crate::plan::PartitionConfig>,
    /// Where progress is kept, and how long a worker's claim lasts.
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// Set rows that cannot be stored aside in a file instead of failing
    /// their partition.
    #[serde(default)]
    pub dead_letter: Option<crate::deadletter::DeadLetterConfig>,
    /// Retries of a partition after transient errors.
    #[serde(default)]
    pub retry: crate::retry::RetryConfig,
    /// Memory budget for everything the run holds at once (batches being
    /// read, encoded and written). Batch and request sizes follow from it.
    /// Default: a quarter of the smaller of physical memory and the cgroup
    /// limit. `shiftload run --memory-limit` overrides it.
    #[serde(default)]
    pub memory_limit: Option<crate::memory::ByteSize>,
    /// Keep the collection up to date from a watermark column (upserts).
    #[serde(default)]
    pub incremental: Option<IncrementalConfig>,
    /// Delete the documents whose key is gone from the source.
    #[serde(default)]
    pub reconcile: ReconcileConfig,
}

/// Where progress is kept.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Collection, in the target database, holding the job's partitions and
    /// their states. Several workers (processes, machines) on the same job
    /// share it.
    #[serde(default = "default_checkpoint_collection")]
    pub collection: String,
    /// Seconds a worker's claim on a partition lasts without a heartbeat;
    /// after that (a killed worker) another run takes the partition over.
    #[serde(default = "default_lease_seconds")]
    pub lease_seconds: u64,
}

fn default_checkpoint_collection() -> String {
    "shiftload_checkpoints".into()
}
fn default_lease_seconds() -> u64 {
    60
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            collection: default_checkpoint_collection(),
            lease_seconds: default_lease_seconds(),
        }
    }
}

/// The Redshift (or PostgreSQL) query to read.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Connection URL, `postgresql://user:password@host:port/database?sslmode=verify-full`
    /// (`redshift://` reads the same; `redshift+iam://` also turns `iam` on),
    /// or libpq's `key=value` form; read by libpq's rules (percent-encode
    /// `/ ? # @ :` in a user name or password). Parameters: `sslmode`
    /// (`disable`, `prefer`, `require`, `verify-ca`, `verify-full`; default
    /// `verify-full`, or `prefer` for a loopback host), `sslrootcert` (a PEM
    /// file, or `system`), `sslcert` and `sslkey` (a client certificate),
    /// `channel_binding` (`disable`, `prefer`, `require`), `connect_timeout`,
    /// `options`, `application_name`. Without TLS no cleartext or MD5
    /// password is sent unless `sslmode=disable` is set.
    /// Use `${PGPASSWORD}`-style references for the password.
    /// Not needed when `staging.mode = "existing"`.
    #[serde(default)]
    pub url: String,
    /// The SELECT whose result is transferred. Runs inside a read
    /// transaction; rows are fetched `fetch_rows` at a time through a
    /// row-limited portal, never all at once. Not needed when
    /// `staging.mode = "existing"`.
    #[serde(default)]
    pub query: String,
    /// Rows to keep, as a SQL-like condition on the result's columns:
    /// comparisons (`=`, `<>`, `<`, `<=`, `>`, `>=`), `AND`, `OR`, `NOT`,
    /// `IN (...)`, `IS [NOT] NULL`, with numbers, `'text'`, `TRUE`/`FALSE`,
    /// `DATE '2024-01-31'` and `TIMESTAMP '2024-01-31 12:00:00'`. Pushed into
    /// the query sent to Redshift/PostgreSQL (and into the UNLOAD); evaluated
    /// on the Arrow batches of staged Parquet parts.
    #[serde(default)]
    pub filter: Option<String>,
    /// Bulk path: UNLOAD the query to Parquet parts on S3 and read the parts
    /// back (each part a checkpointed partition), or read parts that are
    /// already there.
    #[serde(default)]
    pub staging: Option<StagingConfig>,
    /// `statement_timeout` for the source session, in milliseconds (Redshift
    /// and PostgreSQL cancel a statement that runs longer; shiftload retries
    /// the partition and cuts it in half after two timeouts).
    #[serde(default)]
    pub statement_timeout_ms: Option<u64>,
    /// Rows per fetch, and at most per Arrow record batch (a batch is cut
    /// earlier when its rows reach the memory budget's batch share).
    #[serde(default = "default_fetch_rows")]
    pub fetch_rows: u32,
    /// Log in with temporary credentials from AWS IAM: `iam = true`, or a
    /// `[source.iam]` table (cluster, workgroup, region, auto_create,
    /// db_groups, duration_seconds). A `redshift+iam://` URL turns it on too.
    #[serde(default)]
    pub iam: Option<IamSetting>,
}

impl SourceConfig {
    /// The connection URL as `postgresql://…`, whether it names Redshift
    /// (`redshift://`, `redshift+iam://`), and the IAM settings if IAM is on
    /// (by `iam` or by a `redshift+iam://` URL).
    pub fn connection(&self) -> (SourceUrl, Option<IamConfig>) {
        let url = iam::normalise_url(&self.url);
        let iam = self
            .iam
            .as_ref()
            .and_then(IamSetting::config)
            .or_else(|| url.iam.then(|| IamSetting::On(true).config().expect("on")));
        (url, iam)
    }

    /// Whether the job reads Parquet parts that exist already (no query
    /// runs: the filter and projection are applied client-side).
    pub fn reads_existing_parts(&self) -> bool {
        self.staging
            .as_ref()
            .is_some_and(|s| s.mode == StagingMode::Existing)
    }
}

/// Where staged Parquet parts live, and who writes them.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StagingConfig {
    /// `s3://bucket/prefix/`. With `mode = "unload"` each run unloads under
    /// `<prefix>/<job>/<run id>/`; with `mode = "existing"` every object
    /// under the prefix is a Parquet part to read.
    pub location: String,
    /// Who writes the parts.
    #[serde(default)]
    pub mode: StagingMode,
    /// IAM role Redshift assumes to write to the bucket
    /// (`arn:aws:iam::123456789012:role/...`); needed by `mode = "unload"`.
    #[serde(default)]
    pub iam_role: Option<String>,
    /// The bucket's region (default: `AWS_REGION`/`AWS_DEFAULT_REGION`, then
    /// `us-east-1`). Credentials come from the environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`),
    /// never from the job file.
    #[serde(default)]
    pub region: Option<String>,
    /// An S3-compatible endpoint instead of AWS (`http://127.0.0.1:9000`);
    /// default `AWS_ENDPOINT_URL` when set.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// UNLOAD's `MAXFILESIZE`: the largest part, hence the largest unit of
    /// work redone after a crash.
    #[serde(default = "default_max_file_size")]
    pub max_file_size: crate::memory::ByteSize,
    /// Keep the unloaded parts after the run completes (default: delete
    /// them). Parts of `mode = "existing"` are never deleted.
    #[serde(default)]
    pub keep: bool,
}

/// Who writes the staged parts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StagingMode {
    /// shiftload runs `UNLOAD ... FORMAT PARQUET` on Redshift, then reads the
    /// parts.
    #[default]
    Unload,
    /// The parts are already under `location` (an earlier UNLOAD, another
    /// tool); `source.url` and `source.query` are not used.
    Existing,
}

fn default_max_file_size() -> crate::memory::ByteSize {
    crate::memory::ByteSize(256 << 20)
}

/// The MongoDB collection to fill.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// MongoDB connection string (`mongodb://` or `mongodb+srv://`).
    pub uri: String,
    /// Database name.
    pub database: String,
    /// Collection name.
    pub collection: String,
    /// Insert requests in flight at once.
    #[serde(default = "default_writers")]
    pub writers: usize,
    /// How documents are sent.
    #[serde(default)]
    pub send: SendMode,
    /// Documents per insert request, at most (1,000 by default); the
    /// server's `maxWriteBatchSize` and `maxMessageSizeBytes`, and the
    /// budget's share for requests, also bound a request.
    #[serde(default = "default_write_batch_docs")]
    pub write_batch_docs: usize,
    /// What to do when the target already holds a different document under
    /// a document's `_id`.
    #[serde(default)]
    pub on_conflict: OnConflict,
}

/// A document whose `_id` the target already holds with other content: a
/// `mapping.id` that is not unique in the source, or data that is not this
/// job's. (The same document again, from an earlier attempt, is never a
/// conflict: it is counted as already present.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnConflict {
    /// The row is set aside in `[dead_letter]` when there is one; without
    /// one its partition fails, naming the key. Nothing is overwritten.
    #[default]
    Fail,
    /// Keep the document that is there; count it in the summary.
    Skip,
    /// Upsert every document by `_id` (an `update` command, whatever
    /// `send` says): the source's version wins. Needs `mapping.id`.
    Replace,
    /// Upsert every document by `_id`, updating only the fields the job
    /// writes (`$set` by full dotted path; a field whose column is NULL
    /// under `mapping.null = "omit"` is `$unset`): fields that others add
    /// to the documents are kept. Needs `mapping.id`.
    Merge,
}

/// How insert requests are sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SendMode {
    /// The driver's `insert_many`: an `OP_MSG` document sequence. It copies
    /// and re-serialises every document and keeps a map of their ids: about
    /// 1.6 times the client CPU of `command`, but FerretDB takes it about
    /// 12 % faster (`scripts/bench-send.sh`).
    InsertMany,
    /// An `insert` command assembled from the encoded documents in one copy
    /// (`runCommand`), at most maxBsonObjectSize (16 MiB) per request: the
    /// least client CPU per document (`scripts/bench-peers.sh`).
    #[default]
    Command,
}

impl Default for TargetConfig {
    /// No target (an export-only job).
    fn default() -> Self {
        TargetConfig {
            uri: String::new(),
            database: String::new(),
            collection: String::new(),
            writers: default_writers(),
            send: SendMode::default(),
            write_batch_docs: default_write_batch_docs(),
            on_conflict: OnConflict::default(),
        }
    }
}

fn default_fetch_rows() -> u32 {
    65_536
}
fn default_writers() -> usize {
    4
}
fn default_write_batch_docs() -> usize {
    1_000
}

impl JobConfig {
    /// Read, parse, expand `${ENV}` references and check a job file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("cannot read job file {}", path.display()), e))?;
        Self::parse(&text, path)
    }

    /// Parse a job from TOML text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let job_err = |message: String| Error::Job {
            path: PathBuf::from(path),
            message,
        };
        let mut job: JobConfig =
            toml::from_str(text).map_err(|e| job_err(toml_error::describe(text, &e)))?;
        job.expand_env().map_err(job_err)?;
        if job.name.is_none() {
            job.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        job.check().map_err(job_err)?;
        job.check_incremental().map_err(job_err)?;
        job.check_reconcile().map_err(job_err)?;
        crate::redact::register_uri(&job.source.url);
        crate::redact::register_uri(&job.target.uri);
        // S3 credentials come from the environment (or the AWS chain) only;
        // they are masked should a library ever echo them.
        for var in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
            if let Ok(secret) = std::env::var(var) {
                crate::redact::register_secret(&secret);
            }
        }
        Ok(job)
    }

    fn expand_env(&mut self) -> std::result::Result<(), String> {
        if let Some(st) = &mut self.source.staging {
            st.location = expand(&st.location, "source.staging.location")?;
            for (key, value) in [
                ("source.staging.iam_role", &mut st.iam_role),
                ("source.staging.endpoint", &mut st.endpoint),
                ("source.staging.region", &mut st.region),
            ] {
                if let Some(v) = value {
                    *v = expand(v, key)?;
                }
            }
        }
        if let Some(ex) = &mut self.export {
            ex.location = expand(&ex.location, "export.location")?;
            for (key, value) in [
                ("export.endpoint", &mut ex.endpoint),
                ("export.region", &mut ex.region),
            ] {
                if let Some(v) = value {
                    *v = expand(v, key)?;
                }
            }
        }
        let fields: [(&str, &mut String); 5] = [
            ("source.url", &mut self.source.url),
            ("source.query", &mut self.source.query),
            ("target.uri", &mut self.target.uri),
            ("target.database", &mut self.target.database),
            ("target.collection", &mut self.target.collection),
        ];
        for (key, value) in fields {
            *value = expand(value, key)?;
        }
        Ok(())
    }

    fn check(&self) -> std::result::Result<(), String> {
        self.check_source()?;
        self.check_target()?;
        self.check_limits()?;
        self.mapping.check()
    }

    fn check_source(&self) -> std::result::Result<(), String> {
        let existing = self
            .source
            .staging
            .as_ref()
            .is_some_and(|s| s.mode == StagingMode::Existing);
        let sql: &[(&str, &String)] = if existing {
            &[]
        } else {
            &[
                ("source.url", &self.source.url),
                ("source.query", &self.source.query),
            ]
        };
        for (key, value) in sql {
            if value.trim().is_empty() {
                return Err(format!("`{key}` is missing or empty"));
            }
        }
        if !existing {
            crate::conninfo::ConnInfo::parse(&self.source.url)
                .map_err(|e| format!("`source.url`: {e}"))?;
        }
        if let (_, Some(iam)) = self.source.connection() {
            if !(900..=3600).contains(&iam.duration_seconds) {
                return Err(
                    "`source.iam.duration_seconds` must be 900 to 3600 (AWS's limits)".into(),
                );
            }
            if iam.cluster.is_some() && iam.workgroup.is_some() {
                return Err(
                    "`source.iam` names both a `cluster` and a `workgroup`; keep one".into(),
                );
            }
        }
        if let Some(filter) = &self.source.filter {
            let expr = crate::filter::Expr::parse(filter).map_err(|e| e.to_string())?;
            // Pushed into the SQL unless the parts exist already: what `plan`
            // and `run` would refuse there is refused here.
            if !self.source.reads_existing_parts() {
                expr.to_sql().map_err(|e| e.to_string())?;
            }
        }
        if let Some(st) = &self.source.staging {
            let local = st.location.starts_with("file:///") && st.mode == StagingMode::Existing;
            if !st.location.starts_with("s3://") && !local {
                return Err(format!(
                    "`source.staging.location` {:?} must be an s3://bucket/prefix/ URL (or, for \
                     `mode = \"existing\"`, a file:///dir/ URL)",
                    st.location
                ));
            }
            if st.mode == StagingMode::Unload && st.iam_role.as_deref().is_none_or(str::is_empty) {
                return Err("`source.staging.iam_role` is needed to UNLOAD (the role Redshift assumes \
                            to write to the bucket); or set `source.staging.mode = \"existing\"` to read \
                            parts already there"
                    .into());
            }
            if self.partition.is_some() {
                return Err(
                    "`partition` and `source.staging` cannot be combined: staged parts are \
                            the partitions"
                        .into(),
                );
            }
        }
        if let Some(p) = &self.partition {
            if self.mapping.id.is_empty() {
                return Err("`partition` needs `mapping.id`: a partition that is retried or resumed \
                            must find its documents by a stable `_id` (key columns), or it would write \
                            them twice"
                    .into());
            }
            if p.parallel == 0 || p.parallel > 64 {
                return Err("`partition.parallel` must be between 1 and 64".into());
            }
        }
        Ok(())
    }

    /// Whether the job writes only an export (no `[target]`).
    pub fn export_only(&self) -> bool {
        self.export.is_some() && self.target.uri.trim().is_empty()
    }

    fn check_target(&self) -> std::result::Result<(), String> {
        if let Some(export) = &self.export {
            export.check()?;
            if self.incremental.is_some() {
                return Err(
                    "`export` and `incremental` cannot be combined: an export writes \
                            the whole result each run"
                        .into(),
                );
            }
        }
        if self.export_only() {
            return Ok(());
        }
        let nonempty = [
            ("target.uri", &self.target.uri),
            ("target.database", &self.target.database),
            ("target.collection", &self.target.collection),
        ];
        for (key, value) in nonempty {
            if value.trim().is_empty() {
                return Err(format!("`{key}` is empty"));
            }
        }
        let upsert = match self.target.on_conflict {
            OnConflict::Replace => Some("replace"),
            OnConflict::Merge => Some("merge"),
            OnConflict::Fail | OnConflict::Skip => None,
        };
        if let Some(mode) = upsert.filter(|_| self.mapping.id.is_empty()) {
            return Err(format!(
                "`target.on_conflict = \"{mode}\"` needs `mapping.id`: documents are \
                 updated by their `_id`, and without key columns every `_id` is new"
            ));
        }
        if self
            .target
            .database
            .contains(['/', '\\', '.', ' ', '"', '$', '\0'])
        {
            return Err(format!(
                "`target.database` {:?} contains a character MongoDB does not allow in a database name",
                self.target.database
            ));
        }
        if self.target.collection.starts_with("system.")
            || self.target.collection.contains(['$', '\0'])
        {
            return Err(format!(
                "`target.collection` {:?} is not a valid collection name",
                self.target.collection
            ));
        }
        Ok(())
    }

    fn check_limits(&self) -> std::result::Result<(), String> {
        if self.memory_limit.is_some_and(|m| m.0 < 4 << 20) {
            return Err("`memory_limit` must be at least 4MiB".into());
        }
        if self.checkpoint.lease_seconds < 2 {
            return Err("`checkpoint.lease_seconds` must be at least 2".into());
        }
        if self.retry.max_attempts == 0 {
            return Err("`retry.max_attempts` must be at least 1".into());
        }
        if self.source.fetch_rows == 0 {
            return Err("`source.fetch_rows` must be at least 1".into());
        }
        if !(1..=64).contains(&self.target.writers) {
            return Err("`target.writers` must be between 1 and 64".into());
        }
        if self.target.write_batch_docs == 0 {
            return Err("`target.write_batch_docs` must be at least 1".into());
        }
        Ok(())
    }
}

/// The JSON Schema of the job file, as committed in `schemas/job.schema.json`.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(JobConfig);
    let mut s = serde_json::to_string_pretty(&schema).expect("schema serialises");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests;
