//! Applying one staged snapshot to the three tables' engines: schools, then pupils' ids
//! (identity.rs) and versions beside their elevforhold's ids and versions, then the pupils who
//! left a school-scoped source. And the invariants checked once every snapshot is applied.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::RecordBatch;
use rustc_hash::FxHashMap;
use uuid::Uuid;

use super::identity::{uuid_v5, Identity};
use super::plan::TableRun;
use super::scd2::{Key, Scope};
use super::staged::{opt_str, replace_column, rows_of, StagedTable};
use crate::error::{Error, Result};
use crate::ledger::{SnapshotCarry, SnapshotKey};

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
/// closed when no open elevforhold is left in the source. `carry`: the staged-row hashes and
/// the rows standardize carried forward (docs/ARCHITECTURE.md, "Carried rows").
///
/// `made`: summaries of the snapshot's records (docs/ARCHITECTURE.md, "Carried records"); the
/// staged rows' are given the ids they get here.
pub fn snapshot(
    t: &mut Tables,
    identity: &mut Identity,
    staged: &StagedTables,
    carry: Option<&SnapshotCarry>,
    mut made: Option<&mut crate::carried::Made>,
    key: &SnapshotKey,
    kommune: &str,
) -> Result<()> {
    let none = SnapshotCarry::default();
    let carry = carry.unwrap_or(&none);
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
    let (elev_batch, mut pupil_of_source_key) =
        elev_ids(identity, &rows, &source_keys, kildesystem, *as_of, kommune)?;
    if let Some(made) = made.as_deref_mut() {
        for (i, id) in ids_of(&elev_batch)?.into_iter().enumerate() {
            if let Some(id) = id {
                made.give_id(true, i, id);
            }
        }
    }
    let carried_src = match &carry.elev {
        Some(b) => Some((b, crate::delta::strings(b, "stg_kilde_nokkel")?)),
        None => None,
    };
    let carried_elev = match &carried_src {
        Some((b, src)) => carried_pupils(
            identity,
            b,
            src,
            &carry.elev_ids,
            (kildesystem, *as_of, kommune),
            &mut pupil_of_source_key,
        )?,
        None => Vec::new(),
    };
    // Pupils carried unread (docs/ARCHITECTURE.md, "Carried records") were found settled in
    // this very map by standardize: seen again, nothing else. Their elevforhold find them by
    // their system id (their source key).
    let mut carried_elev = carried_elev;
    let mut unread = vec![false; identity.len()];
    for &(n, id) in &carry.elev_unread {
        let Some(u) = unread.get_mut(n as usize) else {
            return Err(Error::Invariant {
                table: "elev".into(),
                detail: format!(
                    "a pupil carried unread as {} is not in the identity map",
                    Key::Id(id)
                ),
            });
        };
        *u = true;
        identity.widen(n, *as_of);
        carried_elev.push(Key::Id(id));
    }
    let carried_ef: Vec<Key> = carry
        .elevforhold_ids
        .iter()
        .map(|&id| Key::Id(id))
        .collect();
    let made_ef = made.is_some();
    // elev versions on one core, elevforhold ids and versions on the other (they need the
    // pupils' ids, not their versions).
    let ef_batch = staged.elevforhold.snapshot(key)?;
    let (elev_done, ef_done) = crate::par::both(
        || {
            t.elev.apply_carried(
                elev_batch,
                key,
                whole_source(),
                &carry.elev_hashes,
                &carried_elev,
            )
        },
        || {
            let identity = &*identity;
            let elev_of = |k: &str| {
                let n = pupil_of_source_key.get(k).copied().or_else(|| {
                    identity
                        .by_system_id(kildesystem, k)
                        .filter(|&n| unread.get(n as usize).copied().unwrap_or(false))
                })?;
                Some(identity.id(n))
            };
            let (b, kept) = elevforhold_ids(&ef_batch, kildesystem, elev_of)?;
            let given: Vec<(u32, [u64; 2])> = match made_ef {
                true => (kept.iter().zip(ids_of(&b)?))
                    .filter_map(|(&row, id)| Some((row, id?)))
                    .collect(),
                false => Vec::new(),
            };
            let hashes: Vec<u64> = match carry.elevforhold_hashes.is_empty() {
                true => Vec::new(),
                false => kept
                    .iter()
                    .map(|&i| {
                        carry
                            .elevforhold_hashes
                            .get(i as usize)
                            .copied()
                            .unwrap_or(0)
                    })
                    .collect(),
            };
            t.elevforhold
                .apply_carried(b, key, scope(), &hashes, &carried_ef)
                .map(|closed| (closed, given))
        },
    );
    elev_done?;
    let (closed_ef, given) = ef_done?;
    if let Some(made) = made {
        for (row, id) in given {
            made.give_id(false, row as usize, id);
        }
    }
    if omfang.is_some() {
        // A pupil who left this school and has no other open elevforhold in this source
        // has left the source.
        let engine = &t.elevforhold.engine;
        let open: HashSet<&Key> = engine
            .state
            .values()
            .filter(|c| c.kildesystem.is_some_and(|k| engine.text(k) == kildesystem))
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

/// The ids of a batch's rows (`id`), as numbers (`None`: not a UUID).
fn ids_of(b: &RecordBatch) -> Result<Vec<Option<[u64; 2]>>> {
    let ids = crate::delta::strings(b, "id")?;
    Ok(crate::par::chunks(b.num_rows(), |part| {
        part.map(|i| match Key::of(ids.value(i)) {
            Key::Id(v) => Some(v),
            Key::Text(_) => None,
        })
        .collect()
    }))
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
    let pupils = identity.resolve_rows(
        (kildesystem, kommune),
        n,
        |i| {
            let source_key = opt_str(src, i).unwrap_or_default();
            (opt_str(&sys, i), opt_str(&fnr, i), source_key)
        },
        as_of,
    );
    let mut ids = arrow::array::StringBuilder::with_capacity(n, n * 36);
    for (i, &pupil) in pupils.iter().enumerate() {
        ids.append_value(identity.id(pupil));
        pupil_of_source_key.insert(opt_str(src, i).unwrap_or_default(), pupil);
    }
    let batch = replace_column(rows, "id", Arc::new(ids.finish()))?;
    Ok((batch, pupil_of_source_key))
}

/// The pupils standardize carried forward (`batch`: their source key `src`, system id and
/// fødselsnummer; `ids`: the ids of their current versions), resolved as staged pupils are —
/// which records that they were seen — and added to `pupil_of_source_key`. Returns their keys.
/// A pupil that resolves to another id than its current version's is refused: the carried
/// row would not be what a full pass publishes.
fn carried_pupils<'r>(
    identity: &mut Identity,
    batch: &RecordBatch,
    src: &'r arrow::array::StringArray,
    ids: &[[u64; 2]],
    (kildesystem, as_of, kommune): (&str, i64, &str),
    pupil_of_source_key: &mut FxHashMap<&'r str, u32>,
) -> Result<Vec<Key>> {
    let sys = crate::delta::strings(batch, "system_id")?;
    let fnr = crate::delta::strings(batch, "fodselsnummer")?;
    if ids.len() != batch.num_rows() {
        return Err(Error::Internal(format!(
            "{} pupils carried forward with {} ids",
            batch.num_rows(),
            ids.len()
        )));
    }
    // Pupils whose identifiers lead to their own fact (every carried pupil on a usual day)
    // are found on every core; the rest, and every pupil after the first of them (it may
    // re-point a lookup), are resolved one at a time, as staged pupils are.
    let found: Vec<Option<u32>> = {
        let identity = &*identity;
        crate::par::chunks(ids.len(), |part| {
            part.map(|i| {
                identity
                    .settled(kildesystem, opt_str(&sys, i), opt_str(&fnr, i))
                    .filter(|&n| Key::of(identity.id(n)) == Key::Id(ids[i]))
            })
            .collect()
        })
    };
    let mut keys = Vec::with_capacity(ids.len());
    pupil_of_source_key.reserve(ids.len());
    let mut settled = true;
    for (i, &id) in ids.iter().enumerate() {
        let source_key = opt_str(src, i).unwrap_or_default();
        // A settled pupil's id was compared with its carried id where it was found.
        let pupil = match found[i].filter(|_| settled) {
            Some(n) => {
                identity.widen(n, as_of);
                n
            }
            None => {
                settled = false;
                let n = identity.resolve(
                    kildesystem,
                    opt_str(&sys, i),
                    opt_str(&fnr, i),
                    || Identity::new_id(kommune, kildesystem, source_key),
                    as_of,
                );
                let key = Key::of(identity.id(n));
                if key != Key::Id(id) {
                    return Err(Error::Invariant {
                        table: "elev".into(),
                        detail: format!(
                            "a pupil carried forward as {} resolves to {key}",
                            Key::Id(id)
                        ),
                    });
                }
                n
            }
        };
        keys.push(Key::Id(id));
        pupil_of_source_key.insert(source_key, pupil);
    }
    Ok(keys)
}

/// A snapshot's elevforhold rows whose pupil is known, with the pupil's id (`elev_id`, from the
/// source key) and their own (UUID v5 of kildesystem, elev_id and skolenummer, hashed on every
/// core); and which of the snapshot's rows they are.
fn elevforhold_ids<'i>(
    b: &RecordBatch,
    kildesystem: &str,
    elev_of: impl Fn(&str) -> Option<&'i str> + Sync,
) -> Result<(RecordBatch, Vec<u32>)> {
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
            Some((i as u32, elev_id, uuid_v5(name.as_bytes())))
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
    Ok((replace_column(&b, "id", Arc::new(ef_ids.finish()))?, keep))
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
            // A million lookups on a first load: on every core, the first orphan of each
            // part kept, so the one named is the first in the inserts' order.
            let inserts = &ef.engine.inserts;
            let orphans = crate::par::chunks(inserts.len(), |part| {
                (inserts[part].iter())
                    .filter(|i| !i.removed)
                    .find(|i| !identity.knows(parents[i.batch as usize].value(i.row as usize)))
                    .into_iter()
                    .collect()
            });
            match orphans.first() {
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
