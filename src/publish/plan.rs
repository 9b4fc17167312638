//! The plan/apply loop's state per SCD2 table: the engine that turns snapshots into versions
//! (scd2.rs), the prepared batches its inserts point into, and what is decided before anything
//! is committed — rebuilt history reconciled with the stored one, invariants checked, and the
//! commit chosen (commit.rs).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, StringArray};
use deltalake::datafusion::prelude::SessionContext;

use super::commit::{Strategy, TableCommit};
use super::row_hash;
use super::scd2::{self, Scd2, Scope, SnapshotRow};
use super::staged::{opt_str, rows_of, ts};
use crate::context::RunContext;
use crate::error::{Error, Result};
use crate::schema::{self, Table};

/// What the MERGE does with one source row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Insert a new version.
    Insert,
    /// Rewrite a stored version with the same key and valid_from (rebuilt history).
    Replace,
}

/// A stored version of a rebuilt source.
struct StoredVersion {
    key: String,
    valid_from: i64,
    valid_to: Option<i64>,
    hash: row_hash::RowHash,
}

/// Per-table engine plus the prepared (id-filled) snapshot batches it refers to.
pub struct TableRun {
    pub table: &'static Table,
    pub engine: Scd2,
    pub batches: Vec<RecordBatch>,
    /// Sources whose history is rebuilt in this run.
    pub rebuilt: HashSet<String>,
    /// Operation per live insert (index into `engine.inserts`, ascending); inserts not listed
    /// are unchanged versions of a rebuilt source and are not written.
    pub ops: Vec<(usize, Op)>,
    /// Stored versions (key, valid_from) of rebuilt sources that no longer exist.
    pub deletes: Vec<(String, i64)>,
    /// The table version the current rows were read from (0: no table yet).
    pub read_version: u64,
    /// Per snapshot applied: how many current keys of its scope it ended, of how many
    /// (for the mass-change guard, `guard.rs`).
    pub shrinks: Vec<Shrink>,
}

/// What one snapshot did to the current keys of its scope.
#[derive(Debug, Clone)]
pub struct Shrink {
    pub snapshot: crate::ledger::SnapshotKey,
    /// Keys current before the snapshot that it closed for absence.
    pub ended: usize,
    /// Keys of its scope current before it.
    pub prior: usize,
    /// Rows the snapshot has.
    pub rows: usize,
}

impl TableRun {
    pub fn new(table: &'static Table, rebuilt: &HashSet<String>) -> Self {
        TableRun {
            table,
            engine: Scd2::default(),
            batches: Vec::new(),
            rebuilt: rebuilt.clone(),
            ops: Vec::new(),
            deletes: Vec::new(),
            read_version: 0,
            shrinks: Vec::new(),
        }
    }

    /// Applies a prepared snapshot batch; returns keys closed for absence.
    pub fn apply(
        &mut self,
        batch: RecordBatch,
        snapshot: &crate::ledger::SnapshotKey,
        scope: Scope<'_>,
    ) -> Result<Vec<scd2::Key>> {
        self.apply_carried(batch, snapshot, scope, &[], &[])
    }

    /// [`TableRun::apply`] of a snapshot with the hash of each staged row (`staged`, in row
    /// order; missing ones are unknown) and the keys of its rows carried forward unchanged.
    pub fn apply_carried(
        &mut self,
        batch: RecordBatch,
        snapshot: &crate::ledger::SnapshotKey,
        scope: Scope<'_>,
        staged: &[u64],
        carried: &[scd2::Key],
    ) -> Result<Vec<scd2::Key>> {
        let as_of = snapshot.2;
        let hashes = row_hash::row_hashes(self.table, &batch)?;
        let keys = crate::delta::strings(&batch, self.table.scd2_key()?)?;
        let ks = crate::delta::strings(&batch, "kildesystem")?;
        let school = crate::delta::strings(&batch, "skolenummer").ok();
        let parent = crate::delta::strings(&batch, "elev_id").ok();
        // Each row made as it is applied, from the batch's columns (no list of them).
        let row_at = |i: usize| SnapshotRow {
            key: keys.value(i),
            hash: hashes[i],
            kildesystem: opt_str(&ks, i),
            skolenummer: school.as_ref().and_then(|s| opt_str(s, i)),
            parent: parent.as_ref().and_then(|p| opt_str(p, i)),
            staged: staged.get(i).copied().unwrap_or(0),
        };
        let n = batch.num_rows();
        self.engine
            .apply_each(self.batches.len(), as_of, n, row_at, carried, scope);
        if self.engine.carried_missing > 0 {
            return Err(Error::Invariant {
                table: self.table.name.into(),
                detail: format!(
                    "{} rows carried forward unchanged have no current version",
                    self.engine.carried_missing
                ),
            });
        }
        self.batches.push(batch);
        let absent = std::mem::take(&mut self.engine.last_absent);
        self.shrinks.push(Shrink {
            snapshot: snapshot.clone(),
            ended: absent.len(),
            prior: self.engine.last_prior,
            rows: self.batches.last().map_or(0, RecordBatch::num_rows) + carried.len(),
        });
        Ok(absent)
    }

    /// Decides what to write. Versions of ordinary sources are inserted. For rebuilt sources the
    /// new history is compared with the stored one: identical versions are kept as they are
    /// (with their transaction_time), changed ones replaced, vanished ones deleted.
    pub async fn reconcile(&mut self, session: &SessionContext) -> Result<()> {
        let mut stored: HashMap<(scd2::Key, i64), StoredVersion> = HashMap::new();
        if !self.rebuilt.is_empty() && crate::delta::has_table(session, self.table.name) {
            let list = self
                .rebuilt
                .iter()
                .map(|s| format!("'{s}'"))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "SELECT {k} AS k, valid_from, valid_to, rad_hash FROM {t} WHERE kildesystem IN ({list})",
                k = self.table.scd2_key()?,
                t = self.table.name
            );
            for b in crate::delta::query(session, &sql).await? {
                let k = crate::delta::strings(&b, "k")?;
                let f = crate::delta::micros(&b, "valid_from")?;
                let to = crate::delta::micros(&b, "valid_to")?;
                let h = crate::delta::strings(&b, "rad_hash")?;
                for i in 0..b.num_rows() {
                    let v = StoredVersion {
                        key: k.value(i).to_string(),
                        valid_from: f.value(i),
                        valid_to: (!to.is_null(i)).then(|| to.value(i)),
                        hash: row_hash::parse_hash(h.value(i)),
                    };
                    stored.insert((scd2::Key::of(&v.key), v.valid_from), v);
                }
            }
        }
        self.ops.clear();
        for (idx, ins) in self.engine.inserts.iter().enumerate() {
            if ins.removed {
                continue;
            }
            let rebuilt = ins
                .kildesystem
                .is_some_and(|k| self.rebuilt.contains(self.engine.text(k)));
            if !rebuilt {
                self.ops.push((idx, Op::Insert));
                continue;
            }
            match stored.remove(&(ins.key.clone(), ins.valid_from)) {
                Some(v) if v.valid_to == ins.valid_to && v.hash == ins.hash() => {}
                Some(_) => self.ops.push((idx, Op::Replace)),
                None => self.ops.push((idx, Op::Insert)),
            }
        }
        self.deletes = stored
            .into_values()
            .map(|v| (v.key, v.valid_from))
            .collect();
        Ok(())
    }

    pub fn has_changes(&self) -> bool {
        !self.engine.closes.is_empty() || !self.ops.is_empty() || !self.deletes.is_empty()
    }

    /// Number of versions this run closes (stored ones and new ones that end within the run).
    pub fn closed(&self) -> usize {
        self.engine.closes.len()
            + self
                .ops
                .iter()
                .filter(|(i, _)| self.engine.inserts[*i].valid_to.is_some())
                .count()
    }

    /// The MERGE source: `_op` is `close` (end a stored version), `insert`, `replace` or
    /// `delete`.
    fn merge_source(&self, transaction_time: i64) -> Result<Vec<RecordBatch>> {
        let t = self.table;
        let schema = t.merge_source_schema();
        let mut parts = Vec::new();
        // New versions, taken from the prepared batches.
        let mut by_batch: BTreeMap<usize, Vec<(&scd2::Insert, Op)>> = BTreeMap::new();
        for (idx, op) in &self.ops {
            let ins = &self.engine.inserts[*idx];
            by_batch
                .entry(ins.batch as usize)
                .or_default()
                .push((ins, *op));
        }
        for (b, inserts) in by_batch {
            let idx: Vec<u32> = inserts.iter().map(|(i, _)| i.row).collect();
            let rows = rows_of(&self.batches[b], &idx)?;
            let n = inserts.len();
            let mut cols: Vec<ArrayRef> = Vec::new();
            for c in t.columns {
                cols.push(match c.name {
                    schema::VALID_FROM => ts(inserts.iter().map(|(i, _)| Some(i.valid_from))),
                    schema::VALID_TO => ts(inserts.iter().map(|(i, _)| i.valid_to)),
                    schema::IS_CURRENT => Arc::new(BooleanArray::from(
                        inserts
                            .iter()
                            .map(|(i, _)| i.valid_to.is_none())
                            .collect::<Vec<_>>(),
                    )),
                    schema::TRANSACTION_TIME => ts((0..n).map(|_| Some(transaction_time))),
                    schema::ROW_HASH => {
                        let mut hashes = arrow::array::StringBuilder::with_capacity(n, n * 32);
                        for (i, _) in &inserts {
                            row_hash::write_hex(&mut hashes, i.hash())
                                .map_err(|e| Error::Internal(format!("{e}")))?;
                            hashes.append_value("");
                        }
                        Arc::new(hashes.finish())
                    }
                    name => rows
                        .column_by_name(name)
                        .cloned()
                        .ok_or_else(|| Error::Internal(format!("staged rows lack {name}")))?,
                });
            }
            cols.push(Arc::new(StringArray::from(
                inserts
                    .iter()
                    .map(|(_, op)| {
                        if *op == Op::Replace {
                            "replace"
                        } else {
                            "insert"
                        }
                    })
                    .collect::<Vec<_>>(),
            )));
            // Staged columns are nullable and may differ in type (e.g. from polars): cast.
            let cols = cols
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            parts.push(RecordBatch::try_new(schema.clone(), cols)?);
        }
        // Closes and deletes of stored versions: only key, valid_from (and valid_to) matter.
        let keyed: Vec<(String, i64, Option<i64>, &str)> = self
            .engine
            .closes
            .iter()
            .map(|c| (c.key.to_string(), c.valid_from, Some(c.valid_to), "close"))
            .chain(
                self.deletes
                    .iter()
                    .map(|(k, f)| (k.clone(), *f, None, "delete")),
            )
            .collect();
        if !keyed.is_empty() {
            let n = keyed.len();
            let cols: Vec<ArrayRef> = schema
                .fields()
                .iter()
                .map(|f| match f.name().as_str() {
                    name if Some(name) == t.key => Arc::new(StringArray::from(
                        keyed.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
                    )) as ArrayRef,
                    schema::VALID_FROM => ts(keyed.iter().map(|c| Some(c.1))),
                    schema::VALID_TO => ts(keyed.iter().map(|c| c.2)),
                    "_op" => Arc::new(StringArray::from(
                        keyed.iter().map(|c| c.3).collect::<Vec<_>>(),
                    )),
                    _ => arrow::array::new_null_array(f.data_type(), n),
                })
                .collect();
            parts.push(RecordBatch::try_new(schema.clone(), cols)?);
        }
        Ok(parts)
    }

    /// Checks the SCD2 invariants on what this run will write; a violation names the key and
    /// stops the run before anything is committed.
    pub fn check(&self) -> Result<()> {
        match self.engine.violation() {
            Some(v) => Err(Error::Invariant {
                table: self.table.name.into(),
                detail: v.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// What to commit: the rows to append or the MERGE source. `None` when nothing changes.
    pub fn prepare(&self, ctx: &RunContext, transaction_time: i64) -> Result<Option<TableCommit>> {
        if !self.has_changes() || ctx.dry_run {
            return Ok(None);
        }
        let mut source = self.merge_source(transaction_time)?;
        let only_inserts =
            self.deletes.is_empty() && self.ops.iter().all(|(_, op)| *op == Op::Insert);
        let strategy = if only_inserts && self.engine.closes.is_empty() {
            // A first load, or new keys only: nothing stored changes.
            for part in source.iter_mut() {
                part.remove_column(part.num_columns() - 1);
            }
            Strategy::Append
        } else if only_inserts {
            // Stored versions are only closed: no rebuilt history to replace or delete.
            Strategy::Rewrite
        } else {
            Strategy::Merge
        };
        Ok(Some(TableCommit::new(
            ctx.clone(),
            self.table,
            source,
            strategy,
            self.read_version,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::scd2::Scope;

    fn ctx() -> RunContext {
        let toml = "[pipeline]\nname = \"t\"\nkommunenummer = \"4601\"\nwarehouse = \"memory:///w\"\n\
                    catalog = \"c\"\nschema = \"s\"\n\n[[source]]\nname = \"k\"\nformat = \"vigo-csv\"\nlocation = \"x\"\n";
        let p = crate::config::Pipeline::parse(toml, std::path::Path::new("p.toml"), None).unwrap();
        RunContext::new(p)
    }

    /// A staged snapshot of schools: (skolenummer, navn).
    fn schools(rows: &[(&str, &str)]) -> RecordBatch {
        let schema = crate::ledger::stage_table(&schema::SKOLE).arrow_schema();
        let n = rows.len();
        let cols = schema
            .fields()
            .iter()
            .map(|f| -> ArrayRef {
                match f.name().as_str() {
                    "skolenummer" => {
                        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0)))
                    }
                    "navn" => Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
                    "kildesystem" => Arc::new(StringArray::from(vec!["k"; n])),
                    _ => arrow::array::new_null_array(f.data_type(), n),
                }
            })
            .collect();
        RecordBatch::try_new(schema, cols).unwrap()
    }

    fn strategy(run: &TableRun) -> Option<Strategy> {
        run.prepare(&ctx(), 0).unwrap().map(|c| c.strategy())
    }

    #[test]
    fn the_plan_appends_new_keys_rewrites_closes_and_merges_rebuilt_history() {
        // A first load only inserts: appended.
        let mut first = TableRun::new(&schema::SKOLE, &HashSet::new());
        first
            .apply(
                schools(&[("46501", "A"), ("46502", "B")]),
                &("k".into(), None, 1),
                Scope::Source("k"),
            )
            .unwrap();
        first.ops = (0..first.engine.inserts.len())
            .map(|i| (i, Op::Insert))
            .collect();
        assert_eq!(strategy(&first), Some(Strategy::Append));
        assert_eq!(first.closed(), 0);

        // A day later one school is renamed and one is gone: stored versions close, so the
        // files with current rows are rewritten; the merge source says what happens to each.
        let mut next = TableRun::new(&schema::SKOLE, &HashSet::new());
        let stored = crate::publish::row_hash::row_hashes(
            &schema::SKOLE,
            &schools(&[("46501", "A"), ("46502", "B")]),
        )
        .unwrap();
        next.engine
            .load_current("46501", stored[0], 1, Some("k"), Some("46501"), None);
        next.engine
            .load_current("46502", stored[1], 1, Some("k"), Some("46502"), None);
        next.apply(
            schools(&[("46501", "A2")]),
            &("k".into(), None, 2),
            Scope::Source("k"),
        )
        .unwrap();
        // One of the two current schools ended (the other got a new version).
        let shrink = &next.shrinks[0];
        assert_eq!((shrink.ended, shrink.prior), (1, 2));
        next.ops = (0..next.engine.inserts.len())
            .map(|i| (i, Op::Insert))
            .collect();
        assert_eq!(next.ops.len(), 1, "one new version (the renamed school)");
        assert_eq!(
            next.closed(),
            2,
            "the renamed and the vanished school close"
        );
        assert_eq!(strategy(&next), Some(Strategy::Rewrite));
        let source = next.merge_source(0).unwrap();
        let ops: Vec<String> = source
            .iter()
            .flat_map(|b| {
                let op = crate::delta::strings(b, "_op").unwrap();
                let key = crate::delta::strings(b, "skolenummer").unwrap();
                (0..b.num_rows()).map(move |i| format!("{} {}", op.value(i), key.value(i)))
            })
            .collect();
        assert_eq!(ops, ["insert 46501", "close 46501", "close 46502"]);

        // Rebuilt history that deletes a stored version needs a MERGE.
        next.deletes.push(("46503".into(), 1));
        assert_eq!(strategy(&next), Some(Strategy::Merge));

        // Nothing changed: nothing to commit.
        let quiet = TableRun::new(&schema::SKOLE, &HashSet::new());
        assert_eq!(strategy(&quiet), None);
    }
}
