//! Delta Lake access: opening and creating the tables defined in `schema`, appending,
//! overwriting, SQL reads, and moving polars frames into arrow-rs through the Arrow C Data
//! Interface. Not here: SCD2 logic (publish/scd2.rs).

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::SchemaRef;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder};
use url::Url;

use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::schema::{Kind, Table};

/// Builds an unloaded table handle on the shared object store for `url`.
fn builder(url: &Url) -> Result<DeltaTableBuilder> {
    let store = crate::storage::store_for(url)?;
    let mut root = url.clone();
    root.set_path("/");
    Ok(DeltaTableBuilder::from_url(url.clone())?.with_storage_backend(store, root))
}

/// Whether a Delta log exists at `url`.
pub async fn exists(url: &Url) -> Result<bool> {
    use futures::StreamExt;
    use object_store::ObjectStore;
    let store = crate::storage::store_for(url)?;
    let mut log = url.clone();
    log.set_path(&format!("{}/_delta_log/", url.path().trim_end_matches('/')));
    if url.scheme() == "file" && !url.to_file_path().map(|p| p.exists()).unwrap_or(false) {
        return Ok(false);
    }
    let prefix = crate::storage::object_path(&log)?;
    let mut listing = store.list(Some(&prefix));
    Ok(matches!(listing.next().await, Some(Ok(_))))
}

/// Opens the table at `url` if it exists.
pub async fn try_open(url: &Url) -> Result<Option<DeltaTable>> {
    if !exists(url).await? {
        return Ok(None);
    }
    let mut table = builder(url)?.build()?;
    table.load().await?;
    Ok(Some(table))
}

/// Opens the table at `url` at a version or a commit time.
pub async fn open_at(
    url: &Url,
    version: Option<i64>,
    timestamp: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<DeltaTable> {
    let mut b = builder(url)?;
    if let Some(v) = version {
        b = b.with_version(v as u64);
    }
    if let Some(t) = timestamp {
        b = b.with_timestamp(t);
    }
    Ok(b.load().await?)
}

/// Opens a pipeline table, creating it (schema with comments, description, properties) when
/// missing.
pub async fn open_or_create(p: &Pipeline, t: &Table) -> Result<DeltaTable> {
    let url = p.table_url(t.name);
    if let Some(table) = try_open(&url).await? {
        return Ok(table);
    }
    if url.scheme() == "file" {
        if let Ok(path) = url.to_file_path() {
            std::fs::create_dir_all(&path)
                .map_err(|e| Error::Other(format!("cannot create {}: {e}", path.display())))?;
        }
    }
    let table = builder(&url)?.build()?;
    let mut config: HashMap<String, Option<String>> = HashMap::new();
    if t.kind == Kind::Scd2 {
        config.insert("delta.enableChangeDataFeed".into(), Some("true".into()));
    }
    let created = table
        .create()
        .with_table_name(t.name)
        .with_comment(t.description)
        .with_columns(t.delta_fields())
        .with_partition_columns(t.partition_by.iter().copied())
        .with_configuration(config)
        .with_save_mode(SaveMode::Ignore)
        .await;
    match created {
        Ok(t) => {
            crate::run::crash_point(&format!("after-create-{}", t_name(&url)));
            Ok(t)
        }
        // Another run created it between our check and our create: open theirs.
        Err(e) => try_open(&url).await?.ok_or(e.into()),
    }
}

fn t_name(url: &Url) -> &str {
    url.path()
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("")
}

/// Commit properties carrying the run id (visible in `DESCRIBE HISTORY` / `history()`).
pub fn commit_props(run_id: &str, stage: &str) -> CommitProperties {
    CommitProperties::default().with_metadata([
        ("elevflyt_run_id".to_string(), serde_json::json!(run_id)),
        ("elevflyt_stage".to_string(), serde_json::json!(stage)),
        (
            "elevflyt_version".to_string(),
            serde_json::json!(env!("CARGO_PKG_VERSION")),
        ),
    ])
}

/// Casts `batch` to the table's schema (e.g. LargeUtf8 from polars to Utf8) and sets the
/// table's field metadata.
pub fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        let c = batch
            .column_by_name(f.name())
            .ok_or_else(|| Error::Other(format!("internal: batch lacks column `{}`", f.name())))?;
        cols.push(if c.data_type() == f.data_type() {
            c.clone()
        } else {
            cast(c, f.data_type())?
        });
    }
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

/// Appends (or overwrites) rows; returns the new table version. Writes nothing for no rows.
pub async fn write(
    p: &Pipeline,
    t: &Table,
    batches: Vec<RecordBatch>,
    mode: SaveMode,
    run_id: &str,
    stage: &str,
) -> Result<Option<i64>> {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if rows == 0 && mode == SaveMode::Append {
        return Ok(None);
    }
    let schema = t.arrow_schema();
    let batches = batches
        .iter()
        .map(|b| conform(b, &schema))
        .collect::<Result<Vec<_>>>()?;
    // Appends and whole-table overwrites do not depend on what they read, so a commit that lost
    // a race with another run is simply made again on top of the winner.
    let mut attempt = 0;
    loop {
        let table = open_or_create(p, t).await?;
        let result = table
            .write(batches.clone())
            .with_save_mode(mode)
            .with_commit_properties(commit_props(run_id, stage))
            .await;
        match result {
            Ok(table) => return Ok(table.version().map(|v| v as i64)),
            Err(e) if attempt < 5 && is_conflict(&e) => {
                attempt += 1;
                tracing::warn!(
                    table = t.name,
                    attempt,
                    "another run committed at the same time; writing again"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Parquet settings: snappy, as delta-rs writes by default. A record as delivered (raw `post`)
/// is unique text that nobody filters on: no dictionary attempt and no min/max statistics.
fn writer_properties(t: &Table) -> parquet::file::properties::WriterProperties {
    use parquet::file::properties::{EnabledStatistics, WriterProperties};
    use parquet::schema::types::ColumnPath;
    let mut b = WriterProperties::builder().set_compression(parquet::basic::Compression::SNAPPY);
    if t.kind == crate::schema::Kind::Append && t.columns.iter().any(|c| c.name == "post") {
        let post = ColumnPath::from("post");
        b = b
            .set_column_dictionary_enabled(post.clone(), false)
            .set_column_statistics_enabled(post, EnabledStatistics::None);
    }
    b.build()
}

/// Appends rows under a claim on the table (a Delta application transaction named after it), so
/// that of two runs appending at once one commits and the other gets `Error::Conflict` and can
/// decide again what to append.
pub async fn write_claimed(
    p: &Pipeline,
    t: &Table,
    batches: Vec<RecordBatch>,
    read_version: u64,
    run_id: &str,
    stage: &str,
) -> Result<Option<i64>> {
    let schema = t.arrow_schema();
    let batches = batches
        .iter()
        .map(|b| conform(b, &schema))
        .collect::<Result<Vec<_>>>()?;
    let mut table = open_or_create(p, t).await?;
    // Commit on top of the version the caller decided from (0: the table did not exist).
    table.load_version(read_version).await?;
    let claim = deltalake::kernel::Transaction::new(
        format!("elevflyt-{}", t.name),
        table.version().map(|v| v as i64 + 1).unwrap_or(0),
    );
    let result = table
        .write(batches)
        .with_writer_properties(writer_properties(t))
        .with_save_mode(SaveMode::Append)
        .with_commit_properties(commit_props(run_id, stage).with_application_transaction(claim))
        .await;
    match result {
        Ok(table) => Ok(table.version().map(|v| v as i64)),
        Err(e) if is_conflict(&e) => Err(Error::Conflict(t.name.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// Whether an error is a lost commit race with another writer.
pub fn is_conflict(e: &deltalake::DeltaTableError) -> bool {
    let text = e.to_string();
    matches!(e, deltalake::DeltaTableError::VersionAlreadyExists(_))
        || [
            "Transaction failed",
            "onflict",
            "oncurrent",
            "already exists",
            "Metadata changed",
        ]
        .iter()
        .any(|needle| text.contains(needle))
}

/// A DataFusion session with the given tables of the pipeline registered under their names.
/// Tables that do not exist yet are left out.
pub async fn session(p: &Pipeline, tables: &[&str]) -> Result<SessionContext> {
    let ctx = SessionContext::new();
    crate::sqlfn::register(&ctx);
    for name in tables {
        if let Some(t) = try_open(&p.table_url(name)).await? {
            register(&ctx, name, &t).await?;
        }
    }
    Ok(ctx)
}

pub async fn register(ctx: &SessionContext, name: &str, table: &DeltaTable) -> Result<()> {
    table.update_datafusion_session(&ctx.state())?;
    let provider = table.table_provider().await?;
    ctx.register_table(name, provider)?;
    Ok(())
}

/// Runs a query and collects the result.
pub async fn query(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    Ok(ctx.sql(sql).await?.collect().await?)
}

/// Whether a table exists in the session.
pub fn has_table(ctx: &SessionContext, name: &str) -> bool {
    ctx.table_exist(name).unwrap_or(false)
}

/// Total rows in a set of batches.
pub fn row_count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

/// Concatenates batches into one (or an empty batch of `schema`).
pub fn concat(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<RecordBatch> {
    Ok(arrow::compute::concat_batches(schema, batches)?)
}

/// A string column as `StringArray`, whatever string encoding the reader produced
/// (Utf8, LargeUtf8 or Utf8View).
pub fn strings(batch: &RecordBatch, name: &str) -> Result<arrow::array::StringArray> {
    let c = batch
        .column_by_name(name)
        .ok_or_else(|| Error::Other(format!("internal: column `{name}` missing")))?;
    let c = cast(c, &arrow::datatypes::DataType::Utf8)?;
    c.as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .cloned()
        .ok_or_else(|| Error::Other(format!("internal: column `{name}` is not text")))
}

/// A text column read without copying, whichever string layout the reader produced
/// (DataFusion reads Parquet strings as views).
#[derive(Debug, Clone)]
pub enum TextCol {
    Utf8(arrow::array::StringArray),
    View(arrow::array::StringViewArray),
}

impl TextCol {
    pub fn value(&self, i: usize) -> &str {
        match self {
            TextCol::Utf8(a) => a.value(i),
            TextCol::View(a) => a.value(i),
        }
    }

    pub fn opt(&self, i: usize) -> Option<&str> {
        use arrow::array::Array;
        let null = match self {
            TextCol::Utf8(a) => a.is_null(i),
            TextCol::View(a) => a.is_null(i),
        };
        (!null).then(|| self.value(i))
    }
}

/// A text column of `batch` without copying it (other types are cast to text).
pub fn text(batch: &RecordBatch, name: &str) -> Result<TextCol> {
    let c = batch
        .column_by_name(name)
        .ok_or_else(|| Error::Other(format!("internal: column `{name}` missing")))?;
    if let Some(v) = c.as_any().downcast_ref::<arrow::array::StringViewArray>() {
        return Ok(TextCol::View(v.clone()));
    }
    Ok(TextCol::Utf8(strings(batch, name)?))
}

/// A timestamp column as microseconds since the epoch (UTC).
pub fn micros(batch: &RecordBatch, name: &str) -> Result<arrow::array::TimestampMicrosecondArray> {
    let c = batch
        .column_by_name(name)
        .ok_or_else(|| Error::Other(format!("internal: column `{name}` missing")))?;
    let c = cast(
        c,
        &arrow::datatypes::DataType::Timestamp(
            arrow::datatypes::TimeUnit::Microsecond,
            Some("UTC".into()),
        ),
    )?;
    c.as_any()
        .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
        .cloned()
        .ok_or_else(|| Error::Other(format!("internal: column `{name}` is not a timestamp")))
}
