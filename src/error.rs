//! Errors a user can act on: each names the file, record and field involved, never personal data.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pipeline file or command line is wrong (exit code 2).
    #[error("configuration error in {}: {message}", path.display())]
    Config { path: PathBuf, message: String },

    /// Bad usage that is not tied to a file (exit code 2).
    #[error("{0}")]
    Usage(String),

    /// A source file cannot be read as its format says.
    #[error("{file}{}: {message}", location(*line, field.as_deref()))]
    Input {
        file: String,
        line: Option<u64>,
        field: Option<String>,
        message: String,
    },

    /// A source location without a single file to read, for a source that is not optional.
    #[error(
        "source `{source_name}`: no files at {location}; check `location` (and `include`) in the \
         pipeline file, or set `optional = true` on the source if it may be empty"
    )]
    NoFiles {
        source_name: String,
        location: String,
    },

    /// A source file changed (its producer still writing it, or cutting it short) after it
    /// was read and before what was read of it was written; `after` says what was kept.
    #[error(
        "source file `{file}` changed while this run used it (its producer is still writing \
         it?); {after}; run again once the file is complete"
    )]
    SourceChanged { file: String, after: String },

    /// Snapshots missing a required part (the OneRoster `orgs` file, say) were held back: nothing
    /// of them was published; they are once the missing files arrive.
    #[error("{0}")]
    Incomplete(String),

    /// One or more `fail` rules were broken; nothing was published.
    #[error("{0}")]
    RuleFailed(String),

    #[error("storage: {0}")]
    Storage(#[from] object_store::Error),

    #[error("delta: {0}")]
    Delta(#[from] deltalake::DeltaTableError),

    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),

    #[error("polars: {0}")]
    Polars(#[from] polars::prelude::PolarsError),

    #[error("sql: {0}")]
    DataFusion(#[from] deltalake::datafusion::error::DataFusionError),

    /// Another run committed to this table at the same time (a lost commit race, retried
    /// where it is safe to: `context::retry_on_conflict`).
    #[error("another run committed to `{0}` at the same time; run again")]
    Conflict(String),

    /// Another run published to this table at the same time, so this run stopped before
    /// writing it; the next run continues where the other left off.
    #[error(
        "another run committed to `{0}` at the same time, so this run stopped before writing it; \
         run again (it continues where the other left off)"
    )]
    ConcurrentRun(String),

    /// The staging tables do not come from one standardize run.
    #[error(
        "the staging tables come from different standardize runs (a standardize was interrupted, \
         or another run standardized at the same time); run `elevflyt standardize` (or `run`) again"
    )]
    StaleStaging,

    /// Publishing would break an SCD2 invariant; nothing was committed.
    #[error("SCD2 invariant broken in {table}: {detail}; nothing was committed")]
    Invariant { table: String, detail: String },

    /// The disk (or quota) under the warehouse is full. Every table stays at its last committed
    /// version: a commit is the last step of a write, so nothing half-written is ever read.
    #[error(
        "no space left on device under {0}: the run stopped, every table is at its last \
         committed version; free space and run again"
    )]
    DiskFull(String),

    /// A bug in elevflyt, not in the data: the message says what was expected.
    #[error("internal error: {0}")]
    Internal(String),

    #[error("{0}")]
    Other(String),
}

fn location(line: Option<u64>, field: Option<&str>) -> String {
    let mut s = String::new();
    if let Some(l) = line {
        s.push_str(&format!(", line {l}"));
    }
    if let Some(f) = field {
        s.push_str(&format!(", field `{f}`"));
    }
    s
}

impl Error {
    /// Whether the error comes from a full disk (ENOSPC), however deep a dependency wrapped it.
    pub fn is_disk_full(&self) -> bool {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(e) = source {
            text.push_str(&e.to_string());
            source = e.source();
        }
        text.contains("No space left on device") || text.contains("os error 28")
    }

    pub fn input(file: impl Into<String>, line: Option<u64>, message: impl Into<String>) -> Self {
        Error::Input {
            file: file.into(),
            line,
            field: None,
            message: message.into(),
        }
    }

    /// Process exit code for this error (docs/ARCHITECTURE.md, "Errors and exit codes"): 2 for usage/configuration, else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. } | Error::Usage(_) => 2,
            _ => 1,
        }
    }
}
