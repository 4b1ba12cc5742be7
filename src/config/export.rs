//! `[export]`: the job's result written as Parquet parts to an object store.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::memory::ByteSize;

/// Write the result as Parquet parts and a manifest (`shiftload export`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// `s3://bucket/prefix/` or `file:///absolute/dir/`. Parts are written
    /// as `<location><partition>_part_<nn>.parquet`, the manifest as
    /// `<location>manifest` (UNLOAD's `MANIFEST VERBOSE` layout), and the
    /// export's progress under `<location>_shiftload/`.
    pub location: String,
    /// The bucket's region (default: `AWS_REGION`/`AWS_DEFAULT_REGION`, then
    /// `us-east-1`). Credentials come from the environment only.
    #[serde(default)]
    pub region: Option<String>,
    /// An S3-compatible endpoint instead of AWS; default `AWS_ENDPOINT_URL`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// A part is closed once it reaches about this size (compressed), and
    /// the next one begun.
    #[serde(default = "default_max_file_size")]
    pub max_file_size: ByteSize,
    /// Rows per row group, at most (a row group is also closed when its
    /// encoded size reaches the memory budget's batch share).
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: usize,
    /// Column compression.
    #[serde(default)]
    pub compression: Compression,
}

/// Parquet column compression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    Zstd,
    Snappy,
    None,
}

fn default_max_file_size() -> ByteSize {
    ByteSize(256 << 20)
}

fn default_row_group_rows() -> usize {
    131_072
}

impl ExportConfig {
    pub(super) fn check(&self) -> std::result::Result<(), String> {
        if !self.location.starts_with("s3://") && !self.location.starts_with("file:///") {
            return Err(format!(
                "`export.location` {:?} must be an s3://bucket/prefix/ or file:///dir/ URL",
                self.location
            ));
        }
        if self.max_file_size.0 < 1 << 20 {
            return Err("`export.max_file_size` must be at least 1MiB".into());
        }
        if self.row_group_rows == 0 {
            return Err("`export.row_group_rows` must be at least 1".into());
        }
        Ok(())
    }
}
