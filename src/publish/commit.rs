//! One SCD2 table's commit, as a delta-rs operation: a builder ([`TableCommit`]) that resolves
//! to `(new version, metrics)` whichever of the three strategies it uses
//! (docs/ARCHITECTURE.md, "Commit strategies"):
//!
//! - [`Strategy::Append`]: only new versions; the rows are appended on top of the version the
//!   current rows were read from, so a run that committed in between makes this one stop.
//! - [`Strategy::Rewrite`]: stored versions are only closed; the files with current rows are
//!   rewritten without a MERGE join (rewrite.rs). A table that cannot be rewritten so
//!   (deletion vectors, partitions) falls back to a MERGE.
//! - [`Strategy::Merge`]: rebuilt history replaces or deletes stored versions: a Delta MERGE.
//!
//! The metrics are the ones a MERGE records in the commit's `operationMetrics`, returned too.

use std::future::{Future, IntoFuture};
use std::pin::Pin;

use arrow::array::RecordBatch;
use deltalake::datafusion::prelude::SessionContext;
use tracing::info;

use super::{merge_record, rewrite};
use crate::context::RunContext;
use crate::error::{Error, Result};
use crate::schema::{self, Table};

/// How a table's changes are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    Append,
    Rewrite,
    Merge,
}

/// What one commit did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CommitMetrics {
    /// The strategy used (a rewrite that fell back to a MERGE says `merge`).
    pub strategy: Strategy,
    pub rows_inserted: usize,
    /// Versions closed or replaced.
    pub rows_updated: usize,
    pub rows_deleted: usize,
    pub files_added: usize,
    pub files_removed: usize,
    pub execution_ms: u64,
}

impl From<merge_record::MergeMetrics> for CommitMetrics {
    fn from(m: merge_record::MergeMetrics) -> Self {
        CommitMetrics {
            strategy: Strategy::Rewrite,
            rows_inserted: m.inserted,
            rows_updated: m.updated,
            rows_deleted: 0,
            files_added: m.files_added,
            files_removed: m.files_removed,
            execution_ms: m.ms,
        }
    }
}

/// One table's commit, prepared: it owns what it writes, so that tables commit at the same
/// time. `source` is in the table's columns, plus `_op` (close, insert, replace, delete) unless
/// the strategy is [`Strategy::Append`].
pub struct TableCommit {
    ctx: RunContext,
    table: &'static Table,
    source: Vec<RecordBatch>,
    strategy: Strategy,
    /// The table version the current rows were read from.
    read_version: u64,
}

impl TableCommit {
    pub fn new(
        ctx: RunContext,
        table: &'static Table,
        source: Vec<RecordBatch>,
        strategy: Strategy,
        read_version: u64,
    ) -> Self {
        TableCommit {
            ctx,
            table,
            source,
            strategy,
            read_version,
        }
    }

    /// The strategy this commit takes (a rewrite may still fall back to a MERGE).
    #[cfg(test)]
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    async fn append(self) -> Result<(Option<i64>, CommitMetrics)> {
        let started = std::time::Instant::now();
        let rows = crate::delta::row_count(&self.source);
        let (version, files_added) = crate::delta::write_claimed(
            &self.ctx.pipeline,
            self.table,
            self.source,
            self.read_version,
            &self.ctx.run_id,
            "publish",
        )
        .await
        .map_err(|e| match e {
            Error::Conflict(table) => Error::ConcurrentRun(table),
            e => e,
        })?;
        info!(
            table = self.table.name,
            inserted = rows,
            "appended new versions"
        );
        Ok((
            version,
            CommitMetrics {
                strategy: Strategy::Append,
                rows_inserted: rows,
                rows_updated: 0,
                rows_deleted: 0,
                files_added,
                files_removed: 0,
                execution_ms: started.elapsed().as_millis() as u64,
            },
        ))
    }

    async fn merge(self) -> Result<(Option<i64>, CommitMetrics)> {
        let (ctx, t) = (self.ctx, self.table);
        let table = crate::delta::open_or_create(&ctx.pipeline, t).await?;
        let df = SessionContext::new().read_batches(self.source)?;
        let predicate = format!(
            "t.{k} = s.{k} AND t.valid_from = s.valid_from",
            k = t.scd2_key()?
        );
        let cols: Vec<&str> = t.columns.iter().map(|c| c.name).collect();
        let (table, m) = table
            .merge(df, predicate)
            .with_writer_properties(crate::delta::writer_properties(t))
            .with_source_alias("s")
            .with_target_alias("t")
            .when_matched_update(|u| {
                u.predicate("s._op = 'close'")
                    .update("valid_to", "s.valid_to")
                    .update("is_current", "false")
            })?
            .when_matched_update(|mut u| {
                u = u.predicate("s._op = 'replace'");
                for c in &cols {
                    u = u.update(*c, format!("s.{c}"));
                }
                u
            })?
            .when_matched_delete(|d| d.predicate("s._op = 'delete'"))?
            .when_not_matched_insert(|mut i| {
                i = i.predicate("s._op = 'insert'");
                for c in &cols {
                    i = i.set(*c, format!("s.{c}"));
                }
                i
            })?
            .with_commit_properties(crate::delta::commit_props(&ctx.run_id, "publish"))
            .await
            .map_err(|e| match crate::delta::is_conflict(&e) {
                true => Error::ConcurrentRun(t.name.to_string()),
                false => e.into(),
            })?;
        let metrics = CommitMetrics {
            strategy: Strategy::Merge,
            rows_inserted: m.num_target_rows_inserted,
            rows_updated: m.num_target_rows_updated,
            rows_deleted: m.num_target_rows_deleted,
            files_added: m.num_target_files_added,
            files_removed: m.num_target_files_removed,
            execution_ms: m.execution_time_ms,
        };
        info!(table = t.name, ?metrics, "merged");
        Ok((table.version().map(|v| v as i64), metrics))
    }

    async fn run(self) -> Result<(Option<i64>, CommitMetrics)> {
        match self.strategy {
            Strategy::Append => self.append().await,
            Strategy::Merge => self.merge().await,
            Strategy::Rewrite => {
                let changes = close_and_insert(self.table, &self.source)?;
                match rewrite::commit(&self.ctx, self.table, self.read_version, changes).await? {
                    Some((version, m)) => Ok((version, m.into())),
                    None => self.merge().await,
                }
            }
        }
    }
}

impl IntoFuture for TableCommit {
    type Output = Result<(Option<i64>, CommitMetrics)>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// The MERGE source as stored versions to close and new versions to insert.
fn close_and_insert(t: &Table, source: &[RecordBatch]) -> Result<rewrite::Changes> {
    let mut changes = rewrite::Changes {
        closes: Vec::new(),
        inserts: Vec::new(),
    };
    for part in source {
        let op = crate::delta::strings(part, "_op")?;
        if part.num_rows() > 0 && op.value(0) == "insert" {
            let mut part = part.clone();
            part.remove_column(part.num_columns() - 1);
            changes.inserts.push(part);
            continue;
        }
        let keys = crate::delta::strings(part, t.scd2_key()?)?;
        let from = crate::delta::micros(part, schema::VALID_FROM)?;
        let to = crate::delta::micros(part, schema::VALID_TO)?;
        for i in 0..part.num_rows() {
            if op.value(i) != "close" {
                return Err(Error::Internal(format!(
                    "`{}` in a close-only commit of {}",
                    op.value(i),
                    t.name
                )));
            }
            changes
                .closes
                .push((keys.value(i).to_string(), from.value(i), to.value(i)));
        }
    }
    Ok(changes)
}
