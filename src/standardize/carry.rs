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
use rustc_hash::FxHashMap;
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

/// The staged-row hash of every row, on every core (never 0: that is "not known").
fn hashes<T: Sync>(
    snap: &Snapshot,
    table: &schema::Table,
    rows: &[T],
    column: impl Fn(&str) -> Option<Get<T>>,
) -> Vec<u64> {
    let gets: Vec<Get<T>> = staged_columns(table)
        .into_iter()
        .filter_map(column)
        .collect();
    let seed = seed(snap, table.name);
    crate::par::chunks(rows.len(), |part| {
        let mut buf = Vec::with_capacity(512);
        part.map(|i| {
            buf.clear();
            for g in &gets {
                g.feed(&rows[i], &mut buf);
            }
            xxhash_rust::xxh3::xxh3_64_with_seed(&buf, seed).max(1)
        })
        .collect()
    })
}

/// The names of a table's staged columns.
fn staged_columns(table: &schema::Table) -> Vec<&'static str> {
    crate::ledger::stage_table(table)
        .columns
        .iter()
        .map(|c| c.name)
        .collect()
}

/// Which rows are carried: those whose key occurs once in the snapshot and whose hash made a
/// current version; with that version's id.
fn carried<T>(
    hashes: &[u64],
    rows: &[T],
    key: impl Fn(&T) -> Option<u64>,
    id_of: impl Fn(u64) -> Option<[u64; 2]>,
) -> Vec<Option<[u64; 2]>> {
    let keys: Vec<Option<u64>> = rows.iter().map(key).collect();
    let mut count: FxHashMap<u64, u32> = FxHashMap::default();
    count.reserve(rows.len());
    for k in keys.iter().flatten() {
        *count.entry(*k).or_default() += 1;
    }
    keys.iter()
        .zip(hashes)
        .map(|(k, &h)| {
            let once = k.is_some_and(|k| count.get(&k) == Some(&1));
            once.then(|| id_of(h)).flatten()
        })
        .collect()
}

fn key_hash(parts: &[Option<&str>]) -> Option<u64> {
    let mut h = Xxh3::new();
    for p in parts {
        let p = p.as_ref()?;
        h.update(&(p.len() as u32).to_le_bytes());
        h.update(p.as_bytes());
    }
    Some(h.digest())
}

/// Keeps the rows (and their hashes) not carried; returns the carried ones.
fn split_off<T>(
    rows: &mut Vec<T>,
    hashes: &mut Vec<u64>,
    ids: &[Option<[u64; 2]>],
) -> (Vec<T>, Vec<[u64; 2]>) {
    let mut kept = Vec::with_capacity(rows.len());
    let mut out = Vec::new();
    let mut out_ids = Vec::new();
    let mut kept_hashes = Vec::with_capacity(hashes.len());
    for ((row, h), id) in rows.drain(..).zip(hashes.drain(..)).zip(ids) {
        match id {
            Some(id) => {
                out.push(row);
                out_ids.push(*id);
            }
            None => {
                kept.push(row);
                kept_hashes.push(h);
            }
        }
    }
    *rows = kept;
    *hashes = kept_hashes;
    (out, out_ids)
}

/// Hashes a snapshot's validated rows and, with an `index` of the current state, takes the
/// unchanged ones out of `staged`. Returns what publish needs of them, and the completeness
/// counts of the rows taken out.
pub fn carry(
    snap: &Snapshot,
    staged: &mut Staged<'_>,
    index: Option<&CarryIndex>,
    nulls: &mut CarriedNulls,
) -> Result<SnapshotCarry> {
    let (mut elev_hashes, mut ef_hashes) = crate::par::both(
        || hashes(snap, &schema::ELEV, &staged.elev, stage::elev_column),
        || {
            hashes(
                snap,
                &schema::ELEVFORHOLD,
                &staged.elevforhold,
                stage::elevforhold_column,
            )
        },
    );
    let Some(index) = index else {
        return Ok(SnapshotCarry {
            elev_hashes,
            elevforhold_hashes: ef_hashes,
            ..Default::default()
        });
    };
    let elev_ids = carried(
        &elev_hashes,
        &staged.elev,
        |e: &ElevRow<'_>| key_hash(&[e.kilde_nokkel.as_deref()]),
        |h| index.elev(h),
    );
    let ef_ids = carried(
        &ef_hashes,
        &staged.elevforhold,
        |e: &EfRow<'_>| key_hash(&[e.elev_kilde_nokkel.as_deref(), e.skolenummer.as_deref()]),
        |h| index.elevforhold(h),
    );
    let (elev, elev_ids) = split_off(&mut staged.elev, &mut elev_hashes, &elev_ids);
    let (ef, ef_ids) = split_off(&mut staged.elevforhold, &mut ef_hashes, &ef_ids);
    let elev_refs: Vec<&ElevRow<'_>> = elev.iter().collect();
    let ef_refs: Vec<&EfRow<'_>> = ef.iter().collect();
    for (table, rows, counts) in [
        (
            &schema::ELEV,
            elev.len(),
            stage::null_counts(&schema::ELEV, &elev_refs, stage::elev_column),
        ),
        (
            &schema::ELEVFORHOLD,
            ef.len(),
            stage::null_counts(&schema::ELEVFORHOLD, &ef_refs, stage::elevforhold_column),
        ),
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
    // What identity resolution needs of a carried pupil.
    let names = ["stg_kilde_nokkel", "system_id", "fodselsnummer"];
    let schema = Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let columns = names
        .iter()
        .map(|n| {
            stage::elev_column(n)
                .map(|g| g.array(elev.iter()))
                .ok_or_else(|| crate::error::Error::Internal(format!("no staged column {n}")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(SnapshotCarry {
        elev_hashes,
        elevforhold_hashes: ef_hashes,
        elev: Some(RecordBatch::try_new(schema, columns)?),
        elev_ids,
        elevforhold_ids: ef_ids,
    })
}
