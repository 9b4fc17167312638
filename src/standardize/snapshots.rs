//! The snapshots standardize works on: the raw records of every snapshot not yet published,
//! read from `raw_<source>` (or taken as this run's ingest committed them), grouped by
//! (source, scope, as-of) in file and record order, borrowed from the raw columns.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, BooleanArray, RecordBatch};

use crate::config::SourceConfig;
use crate::context::RunContext;
use crate::error::{Error, Result};
use crate::formats::{Format, RawRec};
use crate::ledger::SnapshotKey;
use crate::schema::raw_table;

/// The columns of one batch read from a raw table.
#[derive(Debug, Clone)]
struct RawColumns {
    kjelde: crate::delta::TextCol,
    entitet: crate::delta::TextCol,
    rad: arrow::array::Int64Array,
    post: crate::delta::TextCol,
}

/// All records of one source that share a scope and an as-of time.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Already published; staged again only because its source's history is rebuilt.
    pub published: bool,
    pub kildesystem: String,
    pub format: &'static dyn Format,
    pub omfang: Option<String>,
    /// Microseconds since the epoch, UTC.
    pub as_of: i64,
    /// The raw batches the records are in (shared by the snapshots read together).
    columns: Arc<Vec<RawColumns>>,
    /// (batch, row) of each record, in file and record order.
    rows: Vec<(u32, u32)>,
}

#[cfg(test)]
impl Snapshot {
    /// A snapshot of no records, from `kildesystem` as of `as_of` (for tests of what is made of
    /// its rows).
    pub fn empty(kildesystem: &str, as_of: i64) -> Snapshot {
        Snapshot {
            published: false,
            kildesystem: kildesystem.to_string(),
            format: crate::formats::REGISTRY[0],
            omfang: None,
            as_of,
            columns: Arc::new(Vec::new()),
            rows: Vec::new(),
        }
    }
}

impl Snapshot {
    /// The records, in file and record order.
    pub fn records(&self) -> impl Iterator<Item = RawRec<'_>> {
        (0..self.rows.len()).map(|i| self.record(i))
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Record `i` in file and record order (`i < len()`).
    pub fn record(&self, i: usize) -> RawRec<'_> {
        let (b, r) = self.rows[i];
        let c = &self.columns[b as usize];
        let r = r as usize;
        RawRec {
            kjelde: c.kjelde.value(r),
            entitet: c.entitet.value(r),
            rad: c.rad.value(r),
            post: c.post.value(r),
        }
    }
}

impl Snapshot {
    pub fn key(&self) -> SnapshotKey {
        (self.kildesystem.clone(), self.omfang.clone(), self.as_of)
    }
}

/// A source's snapshot keys, from the marker rows only, and the as-of times with rows that
/// this run did not ingest (those must be read from raw).
struct SourceKeys<'c> {
    source: &'c SourceConfig,
    keys: HashMap<SnapshotKey, Parts>,
    stored: BTreeSet<i64>,
}

/// The files of a snapshot and the parts they hold.
#[derive(Debug, Default)]
struct Parts {
    files: BTreeSet<String>,
    /// `None` when a file was ingested before its parts were recorded (taken as complete).
    parts: Option<BTreeSet<String>>,
}

/// The parts a file's marker row records (`ingest::Stamp`).
#[derive(serde::Deserialize)]
struct MarkerParts {
    #[serde(default)]
    parts: Option<Vec<String>>,
}

/// A snapshot held back because a required part is missing.
#[derive(Debug, Clone)]
pub struct HeldBack {
    pub key: SnapshotKey,
    pub missing: Vec<&'static str>,
    pub files: Vec<String>,
}

impl HeldBack {
    /// For the operator: which snapshot, what is missing, which files arrived.
    pub fn describe(&self) -> String {
        format!(
            "{} {}: manglar {} (kom: {})",
            self.key.0,
            crate::context::fmt_micros(self.key.2),
            self.missing.join(", "),
            self.files.join(", ")
        )
    }
}

/// What is pending: the snapshots to standardize, and the incomplete ones held back.
#[derive(Debug, Default)]
pub struct Pending {
    pub snapshots: Vec<Snapshot>,
    pub held_back: Vec<HeldBack>,
    /// Sources whose history publish rebuilds from every snapshot (a late or corrected one).
    pub rebuilt: HashSet<String>,
}

/// Reads the raw records of every snapshot that is not yet published, ordered by as-of — and of
/// every snapshot of a source whose history publish must rebuild (a late snapshot, or an
/// interrupted publish). Published history is otherwise never read again: files are skipped by
/// their `as_of` statistics. `fresh` are the raw rows this run's ingest just committed, per
/// source: they are used as they are instead of being read back.
pub async fn pending(
    ctx: &RunContext,
    fresh: &HashMap<String, Vec<RecordBatch>>,
) -> Result<Pending> {
    let done = crate::ledger::published(ctx).await?;
    let mut sources = Vec::new();
    for source in &ctx.pipeline.file.sources {
        let fresh_rows = fresh.get(&source.name).is_some_and(|b| !b.is_empty());
        sources.extend(source_keys(ctx, source, fresh_rows).await?);
    }
    // A snapshot missing a required part is held back, published or not: nothing of it is
    // applied until its files are complete.
    let mut held_back = Vec::new();
    for s in &sources {
        let required = s.source.format()?.required_parts();
        for (key, parts) in &s.keys {
            let Some(have) = &parts.parts else { continue };
            let missing: Vec<&'static str> = required
                .iter()
                .copied()
                .filter(|r| !have.contains(*r))
                .collect();
            if !missing.is_empty() && !done.contains(key) {
                held_back.push(HeldBack {
                    key: key.clone(),
                    missing,
                    files: parts.files.iter().cloned().collect(),
                });
            }
        }
    }
    held_back.sort_by(|a, b| (a.key.2, &a.key.0).cmp(&(b.key.2, &b.key.0)));
    let held: HashSet<&SnapshotKey> = held_back.iter().map(|h| &h.key).collect();
    let pending: Vec<SnapshotKey> = sources
        .iter()
        .flat_map(|s| {
            s.keys
                .keys()
                .filter(|k| !done.contains(*k) && !held.contains(k))
                .cloned()
        })
        .collect();
    if pending.is_empty() {
        return Ok(Pending {
            snapshots: Vec::new(),
            held_back,
            rebuilt: HashSet::new(),
        });
    }
    let rebuilt = crate::ledger::rebuild_sources(ctx, &pending, &done).await?;
    let wanted =
        |k: &SnapshotKey| !held.contains(k) && (!done.contains(k) || rebuilt.contains(&k.0));
    let mut snaps: BTreeMap<(i64, String, Option<String>), Snapshot> = BTreeMap::new();
    for SourceKeys {
        source,
        keys,
        stored,
    } in &sources
    {
        let format = source.format()?;
        let times: BTreeSet<i64> = keys.keys().filter(|k| wanted(k)).map(|k| k.2).collect();
        if times.is_empty() {
            continue;
        }
        let batches = raw_batches(ctx, source, &times, stored, fresh).await?;
        let index = index_records(&batches, &wanted)?;
        let columns = Arc::new(index.columns);
        for (key, rows) in in_order(index.keys, index.files, index.entries) {
            snaps
                .entry((key.2, key.0.clone(), key.1.clone()))
                .or_insert_with(|| Snapshot {
                    published: done.contains(&key),
                    kildesystem: key.0.clone(),
                    format,
                    omfang: key.1.clone(),
                    as_of: key.2,
                    columns: columns.clone(),
                    rows: Vec::new(),
                })
                .rows
                .extend(rows);
        }
    }
    Ok(Pending {
        snapshots: snaps.into_values().collect(),
        held_back,
        rebuilt,
    })
}

/// A source's snapshot keys; `None` when it has no raw table yet.
async fn source_keys<'c>(
    ctx: &RunContext,
    source: &'c SourceConfig,
    fresh_rows: bool,
) -> Result<Option<SourceKeys<'c>>> {
    let table = raw_table(&source.name);
    let session = crate::delta::session(&ctx.pipeline, &[table.name]).await?;
    if !crate::delta::has_table(&session, table.name) {
        return Ok(None);
    }
    // One marker row per ingested file carries its keys and parts: the other rows are not
    // looked at.
    let sql = format!(
        "SELECT kildesystem, omfang, as_of, kjelde, post, run_id = '{}' AS fresh FROM {} WHERE entitet = '{}'",
        ctx.run_id, table.name, crate::formats::FILE_MARKER
    );
    let mut keys: HashMap<SnapshotKey, Parts> = HashMap::new();
    let mut stored = BTreeSet::new();
    for b in crate::delta::query(&session, &sql).await? {
        let k = crate::delta::strings(&b, "kildesystem")?;
        let o = crate::delta::strings(&b, "omfang")?;
        let t = crate::delta::micros(&b, "as_of")?;
        let file = crate::delta::strings(&b, "kjelde")?;
        let post = crate::delta::strings(&b, "post")?;
        let fresh = b
            .column_by_name("fresh")
            .and_then(|c| c.as_any().downcast_ref::<BooleanArray>())
            .ok_or_else(|| Error::Internal("raw keys".into()))?;
        for i in 0..b.num_rows() {
            let omfang = (!o.is_null(i)).then(|| o.value(i).to_string());
            let e = keys
                .entry((k.value(i).to_string(), omfang, t.value(i)))
                .or_insert_with(|| Parts {
                    parts: Some(BTreeSet::new()),
                    ..Default::default()
                });
            e.files.insert(file.value(i).to_string());
            let parts = serde_json::from_str::<MarkerParts>(post.value(i))
                .ok()
                .and_then(|m| m.parts);
            match (parts, &mut e.parts) {
                (Some(p), Some(have)) => have.extend(p),
                _ => e.parts = None,
            }
            if !fresh.value(i) || !fresh_rows {
                stored.insert(t.value(i));
            }
        }
    }
    Ok(Some(SourceKeys {
        source,
        keys,
        stored,
    }))
}

/// This run's rows of a source as ingested, plus what earlier runs stored for the same times.
async fn raw_batches(
    ctx: &RunContext,
    source: &SourceConfig,
    times: &BTreeSet<i64>,
    stored: &BTreeSet<i64>,
    fresh: &HashMap<String, Vec<RecordBatch>>,
) -> Result<Vec<RecordBatch>> {
    let mut batches = fresh.get(&source.name).cloned().unwrap_or_default();
    let stored: Vec<String> = times
        .intersection(stored)
        .map(|t| format!("to_timestamp_micros({t})"))
        .collect();
    if !stored.is_empty() {
        let table = raw_table(&source.name);
        let session = crate::delta::session(&ctx.pipeline, &[table.name]).await?;
        let sql = format!(
            "SELECT kildesystem, omfang, as_of, kjelde, sha256, entitet, rad, post, lastet FROM {} \
             WHERE as_of IN ({}) AND run_id <> '{}'",
            table.name,
            stored.join(", "),
            ctx.run_id
        );
        batches.extend(crate::delta::query(&session, &sql).await?);
    }
    Ok(batches)
}

/// A record's place: (snapshot number, file number, record number, batch, row).
type Entry = (u32, u32, i64, u32, u32);

/// The records of a source's raw batches, numbered: snapshot keys as met, files by
/// (name, sha256), so a record's entry is numbers only.
struct Index {
    columns: Vec<RawColumns>,
    keys: HashMap<SnapshotKey, u32>,
    files: HashMap<(String, String), u32>,
    entries: Vec<Entry>,
}

/// Indexes the records of the snapshots `wanted` (the others are published and not rebuilt).
fn index_records(batches: &[RecordBatch], wanted: &dyn Fn(&SnapshotKey) -> bool) -> Result<Index> {
    let mut columns = Vec::with_capacity(batches.len());
    // Records are ordered by file name and record number below; a file ingested twice by
    // two runs at once is read once. Snapshot keys are numbered as met, files by
    // (name, sha256): a record's entry is numbers only.
    let mut key_numbers: HashMap<SnapshotKey, u32> = HashMap::new();
    let mut files: HashMap<(String, String), u32> = HashMap::new();
    let mut entries: Vec<(u32, u32, i64, u32, u32)> = Vec::new();
    // (snapshot, file name) → (ingested, sha256, file number) of its newest delivery.
    let mut newest_version: HashMap<(u32, String), (i64, String, u32)> = HashMap::new();
    let mut delivered: HashSet<(u32, u32)> = HashSet::new();
    for (bi, b) in batches.iter().enumerate() {
        let k = crate::delta::text(b, "kildesystem")?;
        let o = crate::delta::text(b, "omfang")?;
        let t = crate::delta::micros(b, "as_of")?;
        let kjelde = crate::delta::text(b, "kjelde")?;
        let sha = crate::delta::text(b, "sha256")?;
        let lastet = crate::delta::micros(b, "lastet")?;
        let rad = arrow::compute::cast(
            b.column_by_name("rad")
                .ok_or_else(|| crate::error::Error::Internal("raw lacks rad".into()))?,
            &arrow::datatypes::DataType::Int64,
        )?;
        let rad = rad
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .ok_or_else(|| crate::error::Error::Internal("raw rad is not an integer".into()))?
            .clone();
        // Rows of one file come together: the key and file are looked up once per run of
        // rows from the same file. `None`: a published snapshot not rebuilt, skipped.
        let mut last: Option<(Option<u32>, u32, usize)> = None;
        entries.reserve(b.num_rows());
        for i in 0..b.num_rows() {
            let same = last.as_ref().is_some_and(|(_, _, p)| {
                t.value(i) == t.value(*p)
                    && kjelde.same(i, *p)
                    && sha.same(i, *p)
                    && k.same(i, *p)
                    && o.opt(i) == o.opt(*p)
            });
            if same {
                if let Some(l) = last.as_mut() {
                    l.2 = i;
                }
            } else {
                let key = (
                    k.value(i).to_string(),
                    o.opt(i).map(str::to_string),
                    t.value(i),
                );
                let wanted = wanted(&key);
                let n = key_numbers.len() as u32;
                let kn = *key_numbers.entry(key).or_insert(n);
                let n = files.len() as u32;
                let f = *files
                    .entry((kjelde.value(i).to_string(), sha.value(i).to_string()))
                    .or_insert(n);
                // The newest delivery of a file name in a snapshot replaces the earlier ones.
                let candidate = (lastet.value(i), sha.value(i).to_string(), f);
                let newest = newest_version
                    .entry((kn, kjelde.value(i).to_string()))
                    .or_insert_with(|| candidate.clone());
                if (candidate.0, &candidate.1) > (newest.0, &newest.1) {
                    *newest = candidate;
                }
                delivered.insert((kn, f));
                last = Some((wanted.then_some(kn), f, i));
            }
            if let Some((Some(kn), f, _)) = last {
                entries.push((kn, f, rad.value(i), bi as u32, i as u32));
            }
        }
        columns.push(RawColumns {
            kjelde,
            entitet: crate::delta::text(b, "entitet")?,
            rad,
            post: crate::delta::text(b, "post")?,
        });
    }
    // Records of a file delivered again under the same name and as-of are left out.
    let current: HashSet<(u32, u32)> = newest_version
        .values()
        .zip(newest_version.keys())
        .map(|((_, _, f), (kn, _))| (*kn, *f))
        .collect();
    let superseded: HashSet<(u32, u32)> = delivered.difference(&current).copied().collect();
    if !superseded.is_empty() {
        entries.retain(|e| !superseded.contains(&(e.0, e.1)));
    }
    Ok(Index {
        columns,
        keys: key_numbers,
        files,
        entries,
    })
}

/// Each snapshot's records: snapshots by (as-of, source, scope); files by name (then sha256,
/// for two versions of one name); then record number. A file ingested twice by two runs at once
/// is read once.
fn in_order(
    key_numbers: HashMap<SnapshotKey, u32>,
    files: HashMap<(String, String), u32>,
    mut entries: Vec<Entry>,
) -> Vec<(SnapshotKey, Vec<(u32, u32)>)> {
    // This run's rows usually are in that order already.
    let mut keys: Vec<(SnapshotKey, u32)> = key_numbers.into_iter().collect();
    keys.sort_by(|(a, _), (b, _)| (a.2, &a.0, &a.1).cmp(&(b.2, &b.0, &b.1)));
    let mut key_rank = vec![0u32; keys.len()];
    for (r, (_, n)) in keys.iter().enumerate() {
        key_rank[*n as usize] = r as u32;
    }
    let mut names: Vec<(&(String, String), &u32)> = files.iter().collect();
    names.sort();
    let mut rank = vec![0u32; files.len()];
    for (r, (_, f)) in names.iter().enumerate() {
        rank[**f as usize] = r as u32;
    }
    let order = |e: &Entry| (key_rank[e.0 as usize], rank[e.1 as usize], e.2);
    if !entries.is_sorted_by_key(order) {
        entries.sort_unstable_by_key(order);
    }
    // Two copies of one file (same name and sha256) give the same (file, record) twice.
    entries.dedup_by(|a, b| a.1 == b.1 && a.2 == b.2 && a.0 == b.0);
    let mut rows: Vec<Vec<(u32, u32)>> = vec![Vec::new(); keys.len()];
    for (kn, _, _, bi, i) in entries {
        rows[kn as usize].push((bi, i));
    }
    keys.into_iter()
        .map(|(key, kn)| (key, std::mem::take(&mut rows[kn as usize])))
        .filter(|(_, rows)| !rows.is_empty())
        .collect()
}
