//! Applying one staged snapshot to the three tables' engines: schools, then pupils' ids
//! (identity.rs) and versions beside their elevforhold's ids and versions, then the pupils who
//! left a school-scoped source. And the invariants checked once every snapshot is applied.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::RecordBatch;
use rustc_hash::FxHashMap;
use uuid::Uuid;

use super::identity::{Identity, NAMESPACE};
use super::plan::TableRun;
use super::scd2::{Key, Scope};
use super::staged::{opt_str, replace_column, rows_of, StagedTable};
use crate::error::{Error, Result};
use crate::ledger::SnapshotKey;

/// The plan of each SCD2 table of one publish.
pub struct Tables {
    pub skole: TableRun,
    pub elev: TableRun,
    pub elevforhold: TableRun,
}

impl Tables {
    /// In commit order: skole first (elevforhold rows name schools), then elev and elevforhold.
    pub fn all_mut(&mut self) -> [&mut TableRun; 3] {
        [&mut self.skole, &mut self.elev, &mut self.elevforhold]
    }

    pub fn all(&self) -> [&TableRun; 3] {
        [&self.skole, &self.elev, &self.elevforhold]
    }
}

/// The staged rows of each SCD2 table, indexed by snapshot.
pub struct StagedTables {
    pub skole: StagedTable,
    pub elev: StagedTable,
    pub elevforhold: StagedTable,
}

/// Applies one snapshot. Per-school lists do not cover a pupil's other schools: a pupil is
/// closed when no open elevforhold is left in the source.
pub fn snapshot(
    t: &mut Tables,
    identity: &mut Identity,
    staged: &StagedTables,
    key: &SnapshotKey,
    kommune: &str,
) -> Result<()> {
    let (kildesystem, omfang, as_of) = key;
    let scope = || match omfang {
        Some(s) => Scope::School(kildesystem, s),
        None => Scope::Source(kildesystem),
    };
    // A school-scoped list closes no schools and no pupils by their absence.
    let whole_source = || {
        if omfang.is_some() {
            Scope::None
        } else {
            scope()
        }
    };
    t.skole
        .apply(staged.skole.snapshot(key)?, key, whole_source())?;

    let rows = staged.elev.snapshot(key)?;
    let source_keys = crate::delta::strings(&rows, "stg_kilde_nokkel")?;
    let (elev_batch, pupil_of_source_key) =
        elev_ids(identity, &rows, &source_keys, kildesystem, *as_of, kommune)?;
    // elev versions on one core, elevforhold ids and versions on the other (they need the
    // pupils' ids, not their versions).
    let ef_batch = staged.elevforhold.snapshot(key)?;
    let (elev_done, ef_done) = crate::par::both(
        || t.elev.apply(elev_batch, key, whole_source()),
        || {
            let identity = &*identity;
            let elev_of = |k: &str| pupil_of_source_key.get(k).map(|&n| identity.id(n));
            let b = elevforhold_ids(&ef_batch, kildesystem, elev_of)?;
            t.elevforhold.apply(b, key, scope())
        },
    );
    elev_done?;
    let closed_ef = ef_done?;
    if omfang.is_some() {
        // A pupil who left this school and has no other open elevforhold in this source
        // has left the source.
        let open: HashSet<&Key> = t
            .elevforhold
            .engine
            .state
            .values()
            .filter(|c| c.kildesystem.as_deref() == Some(kildesystem.as_str()))
            .filter_map(|c| c.parent.as_ref())
            .collect();
        let leaving: Vec<Key> = closed_ef
            .iter()
            .filter_map(|k| t.elevforhold.engine.parents_of_closed.get(k))
            .filter(|p| !open.contains(p))
            .cloned()
            .collect();
        for p in &leaving {
            t.elev.engine.close_key(p, *as_of);
        }
    }
    Ok(())
}

/// A snapshot's elev rows with their ids resolved, and each source key (`src`, the rows'
/// `stg_kilde_nokkel`) with its pupil number.
fn elev_ids<'r>(
    identity: &mut Identity,
    rows: &RecordBatch,
    src: &'r arrow::array::StringArray,
    kildesystem: &str,
    as_of: i64,
    kommune: &str,
) -> Result<(RecordBatch, FxHashMap<&'r str, u32>)> {
    let sys = crate::delta::strings(rows, "system_id")?;
    let fnr = crate::delta::strings(rows, "fodselsnummer")?;
    let n = rows.num_rows();
    let mut pupil_of_source_key: FxHashMap<&str, u32> = FxHashMap::default();
    pupil_of_source_key.reserve(n);
    let mut ids = arrow::array::StringBuilder::with_capacity(n, n * 36);
    // The ids of pupils not met before: on a first load (every pupil is new) hashed
    // beforehand on every core, otherwise only for the few that are new.
    let mut new_ids: Option<Vec<Option<Arc<str>>>> = identity.is_empty().then(|| {
        crate::par::chunks(n, |part| {
            part.map(|i| {
                let source_key = opt_str(src, i).unwrap_or_default();
                Some(Identity::new_id(kommune, kildesystem, source_key))
            })
            .collect()
        })
    });
    for i in 0..n {
        let source_key = opt_str(src, i).unwrap_or_default();
        let pupil = identity.resolve(
            kildesystem,
            opt_str(&sys, i),
            opt_str(&fnr, i),
            || {
                new_ids
                    .as_mut()
                    .and_then(|ids| ids[i].take())
                    .unwrap_or_else(|| Identity::new_id(kommune, kildesystem, source_key))
            },
            as_of,
        );
        ids.append_value(identity.id(pupil));
        pupil_of_source_key.insert(source_key, pupil);
    }
    let batch = replace_column(rows, "id", Arc::new(ids.finish()))?;
    Ok((batch, pupil_of_source_key))
}

/// A snapshot's elevforhold rows whose pupil is known, with the pupil's id (`elev_id`, from the
/// source key) and their own (UUID v5 of kildesystem, elev_id and skolenummer, hashed on every
/// core).
fn elevforhold_ids<'i>(
    b: &RecordBatch,
    kildesystem: &str,
    elev_of: impl Fn(&str) -> Option<&'i str> + Sync,
) -> Result<RecordBatch> {
    let src = crate::delta::strings(b, "stg_kilde_nokkel")?;
    let skolenr = crate::delta::strings(b, "skolenummer")?;
    let found: Vec<(u32, &'i str, Uuid)> = crate::par::chunks(b.num_rows(), |rows| {
        let mut name = String::new();
        rows.filter_map(|i| {
            let elev_id = opt_str(&src, i).and_then(&elev_of)?;
            name.clear();
            {
                use std::fmt::Write;
                let _ = write!(
                    name,
                    "elevforhold|{kildesystem}|{elev_id}|{}",
                    skolenr.value(i)
                );
            }
            Some((i as u32, elev_id, Uuid::new_v5(&NAMESPACE, name.as_bytes())))
        })
        .collect()
    });
    let n = found.len();
    let keep: Vec<u32> = found.iter().map(|f| f.0).collect();
    let mut elev_ids = arrow::array::StringBuilder::with_capacity(n, n * 36);
    let mut ef_ids = arrow::array::StringBuilder::with_capacity(n, n * 36);
    let mut buf = Uuid::encode_buffer();
    for (_, elev_id, id) in &found {
        elev_ids.append_value(elev_id);
        ef_ids.append_value(id.hyphenated().encode_lower(&mut buf));
    }
    let b = rows_of(b, &keep)?;
    let b = replace_column(&b, "elev_id", Arc::new(elev_ids.finish()))?;
    replace_column(&b, "id", Arc::new(ef_ids.finish()))
}

/// The SCD2 invariants of what this run will write, for every table, before any commit:
/// elevforhold's own and that each of its rows points to a known pupil, beside the others'.
pub fn check(t: &Tables, identity: &Identity) -> Result<()> {
    let (others, ef_checked) = crate::par::both(
        || t.skole.check().and_then(|()| t.elev.check()),
        || -> Result<()> {
            let ef = &t.elevforhold;
            ef.check()?;
            let parents = ef
                .batches
                .iter()
                .map(|b| crate::delta::strings(b, "elev_id"))
                .collect::<Result<Vec<_>>>()?;
            match ef
                .engine
                .live_inserts()
                .find(|i| !identity.knows(parents[i.batch].value(i.row)))
            {
                Some(orphan) => Err(Error::Invariant {
                    table: "elevforhold".into(),
                    detail: format!("key {} points to no elev", orphan.key),
                }),
                None => Ok(()),
            }
        },
    );
    others?;
    ef_checked
}
