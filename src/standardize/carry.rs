//! Carried rows (docs/ARCHITECTURE.md, "Carried rows"): every validated elev and elevforhold
//! row gets a hash of what is staged of it (its source, scope, source key and every staged
//! field); a row whose hash made the current version of its key is not staged again but
//! carried forward by its id, and publish marks it present without hashing, identifying or
//! comparing it. Validation has already run over every row, so duplicates, references and
//! deviations are decided exactly as without carrying.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema};
use xxhash_rust::xxh3::Xxh3;

use super::snapshots::Snapshot;
use super::stage::{self, Get};
use crate::error::Result;
use crate::fint::{EfRow, ElevRow, Staged};
use crate::ledger::SnapshotCarry;
use crate::publish::CarryIndex;
use crate::schema;

/// Changed when what publish makes of a staged row changes while the staged row does not (the
/// elevflyt version is hashed too: a new release stages every row once).
const CARRY_FORMAT: &[u8] = b"elevflyt-carry-1";

/// Completeness counts of rows carried forward (not in the staged batches): per table, the
/// rows and the nulls per business column.
pub type CarriedNulls = BTreeMap<&'static str, (usize, Vec<(&'static str, usize)>)>;

/// The seed of every row's hash of this snapshot and table.
fn seed(snap: &Snapshot, table: &str) -> u64 {
    let mut h = Xxh3::new();
    for part in [
        CARRY_FORMAT,
        env!("CARGO_PKG_VERSION").as_bytes(),
        table.as_bytes(),
        snap.kildesystem.as_bytes(),
        snap.omfang.as_deref().unwrap_or("\u{0}").as_bytes(),
    ] {
        h.update(&(part.len() as u32).to_le_bytes());
        h.update(part);
    }
    h.digest()
}

/// The staged-row hash of every row and, with `find`, the id of the current version that hash
/// made when the row has a key; on every core, in one pass over the rows (a hash is never 0:
/// that is "not known").
fn hash_and_find<T: Sync>(
    snap: &Snapshot,
    table: &schema::Table,
    rows: &[T],
    column: impl Fn(&str) -> Option<Get<T>>,
    keyed: impl Fn(&T) -> bool + Sync,
    find: Option<impl Fn(u64) -> Option<[u64; 2]> + Sync>,
) -> (Vec<u64>, Vec<Option<[u64; 2]>>) {
    let gets: Vec<Get<T>> = staged_columns(table)
        .into_iter()
        .filter_map(column)
        .collect();
    let seed = seed(snap, table.name);
    crate::par::chunks(rows.len(), |part| {
        let mut buf = Vec::with_capacity(512);
        part.map(|i| {
            let row = &rows[i];
            buf.clear();
            for g in &gets {
                g.feed(row, &mut buf);
            }
            let h = xxhash_rust::xxh3::xxh3_64_with_seed(&buf, seed).max(1);
            let id = find.as_ref().filter(|_| keyed(row)).and_then(|f| f(h));
            (h, id)
        })
        .collect()
    })
    .into_iter()
    .unzip()
}

/// The names of a table's staged columns.
fn staged_columns(table: &schema::Table) -> Vec<&'static str> {
    crate::ledger::stage_table(table)
        .columns
        .iter()
        .map(|c| c.name)
        .collect()
}

/// Takes the carried rows (those with an id) out of `rows` and their hashes out of `hashes`, in
/// place; returns the carried rows' ids in row order.
fn remove_carried<T>(
    rows: &mut Vec<T>,
    hashes: &mut Vec<u64>,
    ids: &[Option<[u64; 2]>],
) -> Vec<[u64; 2]> {
    let kept = || ids.iter().map(Option::is_none);
    super::validate::retain_flagged(rows, kept());
    super::validate::retain_flagged(hashes, kept());
    ids.iter().flatten().copied().collect()
}

/// The rows with an id (those carried).
fn with_id<'r, T>(rows: &'r [T], ids: &[Option<[u64; 2]>]) -> Vec<&'r T> {
    rows.iter()
        .zip(ids)
        .filter_map(|(r, id)| id.map(|_| r))
        .collect()
}

/// Hashes a snapshot's validated rows and, with an `index` of the current state, takes the
/// unchanged ones out of `staged`. Returns what publish needs of them, and the completeness
/// counts of the rows taken out.
pub fn carry(
    snap: &Snapshot,
    staged: &mut Staged<'_>,
    index: Option<&CarryIndex<'_>>,
    nulls: &mut CarriedNulls,
) -> Result<SnapshotCarry> {
    // A kept row's key is unique in the snapshot: validation keeps only the first pupil with
    // a source key and the first elevforhold of a pupil at a school
    // (docs/ARCHITECTURE.md, "Quality rules and deviations"), so a hash that made a current
    // version is that version's row, unchanged.
    let ((mut elev_hashes, elev_found), (mut ef_hashes, ef_found)) = crate::par::both(
        || {
            hash_and_find(
                snap,
                &schema::ELEV,
                &staged.elev,
                stage::elev_column,
                |e: &ElevRow<'_>| e.kilde_nokkel.is_some(),
                index.map(|i| |h| i.elev(h)),
            )
        },
        || {
            hash_and_find(
                snap,
                &schema::ELEVFORHOLD,
                &staged.elevforhold,
                stage::elevforhold_column,
                |e: &EfRow<'_>| e.elev_kilde_nokkel.is_some() && e.skolenummer.is_some(),
                index.map(|i| |h| i.elevforhold(h)),
            )
        },
    );
    if index.is_none() {
        return Ok(SnapshotCarry {
            elev_hashes,
            elevforhold_hashes: ef_hashes,
            ..Default::default()
        });
    }
    // What is counted and resolved of the carried rows is read before they leave: the
    // completeness counts (one table on each core) and what identity resolution needs of a
    // carried pupil.
    let carried_elev = with_id(&staged.elev, &elev_found);
    let carried_ef = with_id(&staged.elevforhold, &ef_found);
    let names = ["stg_kilde_nokkel", "system_id", "fodselsnummer"];
    let ((elev_nulls, identity), ef_nulls) = crate::par::both(
        || {
            let identity = names
                .iter()
                .map(|n| {
                    stage::elev_column(n)
                        .map(|g| g.array(carried_elev.iter().copied()))
                        .ok_or_else(|| {
                            crate::error::Error::Internal(format!("no staged column {n}"))
                        })
                })
                .collect::<Result<Vec<_>>>();
            (
                stage::null_counts(&schema::ELEV, &carried_elev, stage::elev_column),
                identity,
            )
        },
        || stage::null_counts(&schema::ELEVFORHOLD, &carried_ef, stage::elevforhold_column),
    );
    for (table, rows, counts) in [
        (&schema::ELEV, carried_elev.len(), elev_nulls),
        (&schema::ELEVFORHOLD, carried_ef.len(), ef_nulls),
    ] {
        let e = nulls.entry(table.name).or_insert_with(|| (0, Vec::new()));
        e.0 += rows;
        if e.1.is_empty() {
            e.1 = counts;
        } else {
            for (a, b) in e.1.iter_mut().zip(counts) {
                a.1 += b.1;
            }
        }
    }
    drop((carried_elev, carried_ef));
    let schema = Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let elev = Some(RecordBatch::try_new(schema, identity?)?);
    let elev_ids = remove_carried(&mut staged.elev, &mut elev_hashes, &elev_found);
    let elevforhold_ids = remove_carried(&mut staged.elevforhold, &mut ef_hashes, &ef_found);
    Ok(SnapshotCarry {
        elev_hashes,
        elevforhold_hashes: ef_hashes,
        elev,
        elev_ids,
        elevforhold_ids,
    })
}
