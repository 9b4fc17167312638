//! Standardize: turns the raw records of every snapshot not yet published into FINT rows for
//! `elev`, `elevforhold` and `skole` (staging tables `stg_*`), derives fields (birth date and
//! legacy gender from the fødselsnummer, split names), validates every row (docs/ARCHITECTURE.md, "Quality rules and deviations") and writes
//! the deviations to `avvik`. Rows are built borrowing the raw records' text and go straight into
//! Arrow columns.
//!
//! Not here: ids and history (publish), parsing files (ingest).

mod avvik;
mod metrics;
mod validate;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Int32Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, SchemaRef};
use chrono::NaiveDate;
use tracing::{info, warn};

use crate::context::RunContext;
use crate::error::Result;
use crate::fint::{EfRow, ElevRow, SkoleRow, Staged};
use crate::formats::{Format, RawRec, SnapshotInput};
use crate::ledger::{stage_table, write_stage, SnapshotKey, StagedData};
use crate::metrics::Metric;
use crate::quality::{fnr, Checker};
use crate::schema::{self, raw_table};

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

impl std::fmt::Debug for dyn Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Snapshot {
    /// The records, in file and record order.
    pub fn records(&self) -> impl Iterator<Item = RawRec<'_>> {
        self.rows.iter().map(|&(b, r)| {
            let c = &self.columns[b as usize];
            let r = r as usize;
            RawRec {
                kjelde: c.kjelde.value(r),
                entitet: c.entitet.value(r),
                rad: c.rad.value(r),
                post: c.post.value(r),
            }
        })
    }
}

impl Snapshot {
    pub fn key(&self) -> SnapshotKey {
        (self.kildesystem.clone(), self.omfang.clone(), self.as_of)
    }
}

/// A number with the separators people type stripped, borrowed when it has none.
fn normalized(v: Cow<'_, str>) -> Cow<'_, str> {
    match v {
        Cow::Borrowed(s) => fnr::normalize(s),
        Cow::Owned(s) => Cow::Owned(fnr::normalize(&s).into_owned()),
    }
}

/// What standardize did.
#[derive(Debug, Default)]
pub struct StandardizeOutcome {
    /// What was staged, handed straight to publish by `run` (so that a concurrent run's
    /// staging cannot mix with this one's).
    pub staged: Option<StagedData>,
    pub snapshots: usize,
    pub rows_in: BTreeMap<&'static str, usize>,
    pub rows_out: BTreeMap<&'static str, usize>,
    pub avvik: usize,
    pub avvik_version: Option<i64>,
    pub failures: Vec<(&'static str, u64)>,
    pub metrics: Vec<Metric>,
}

use arrow::array::Array;

/// Reads the raw records of every snapshot that is not yet published, ordered by as-of — and of
/// every snapshot of a source whose history publish must rebuild (a late snapshot, or an
/// interrupted publish). Published history is otherwise never read again: files are skipped by
/// their `as_of` statistics. `fresh` are the raw rows this run's ingest just committed, per
/// source: they are used as they are instead of being read back.
async fn pending_snapshots(
    ctx: &RunContext,
    fresh: &HashMap<String, Vec<RecordBatch>>,
) -> Result<Vec<Snapshot>> {
    let done = crate::ledger::published(ctx).await?;
    // Snapshot keys per source, from the key columns only, and the as-of times with rows that
    // this run did not ingest (those must be read from raw).
    type Keys = (Vec<SnapshotKey>, std::collections::BTreeSet<i64>);
    let mut keys_per_source: Vec<(&crate::config::SourceConfig, Keys)> = Vec::new();
    for source in &ctx.pipeline.file.sources {
        let table = raw_table(&source.name);
        let session = crate::delta::session(&ctx.pipeline, &[table.name]).await?;
        if !crate::delta::has_table(&session, table.name) {
            continue;
        }
        // One marker row per ingested file carries its keys: the other rows are not looked at.
        let sql = format!(
            "SELECT DISTINCT kildesystem, omfang, as_of, run_id = '{}' AS fresh FROM {} WHERE entitet = '{}'",
            ctx.run_id, table.name, crate::formats::FILE_MARKER
        );
        let fresh_rows = fresh.get(&source.name).is_some_and(|b| !b.is_empty());
        let mut keys = HashSet::new();
        let mut stored = std::collections::BTreeSet::new();
        for b in crate::delta::query(&session, &sql).await? {
            let k = crate::delta::strings(&b, "kildesystem")?;
            let o = crate::delta::strings(&b, "omfang")?;
            let t = crate::delta::micros(&b, "as_of")?;
            let fresh = b
                .column_by_name("fresh")
                .and_then(|c| c.as_any().downcast_ref::<BooleanArray>())
                .ok_or_else(|| crate::error::Error::Internal("raw keys".into()))?;
            for i in 0..b.num_rows() {
                let omfang = (!o.is_null(i)).then(|| o.value(i).to_string());
                keys.insert((k.value(i).to_string(), omfang, t.value(i)));
                if !fresh.value(i) || !fresh_rows {
                    stored.insert(t.value(i));
                }
            }
        }
        keys_per_source.push((source, (keys.into_iter().collect(), stored)));
    }
    let pending: Vec<SnapshotKey> = keys_per_source
        .iter()
        .flat_map(|(_, (keys, _))| keys.iter().filter(|k| !done.contains(*k)).cloned())
        .collect();
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    let rebuilt = crate::ledger::rebuild_sources(ctx, &pending).await?;

    let mut snaps: BTreeMap<(i64, String, Option<String>), Snapshot> = BTreeMap::new();
    for (source, (keys, stored)) in keys_per_source {
        let format = source.format()?;
        let times: std::collections::BTreeSet<i64> = keys
            .iter()
            .filter(|k| rebuilt.contains(&k.0) || !done.contains(*k))
            .map(|k| k.2)
            .collect();
        if times.is_empty() {
            continue;
        }
        // This run's rows as ingested, plus what earlier runs stored for the same times.
        let mut batches = fresh.get(&source.name).cloned().unwrap_or_default();
        let stored: Vec<String> = times
            .intersection(&stored)
            .map(|t| format!("to_timestamp_micros({t})"))
            .collect();
        if !stored.is_empty() {
            let table = raw_table(&source.name);
            let session = crate::delta::session(&ctx.pipeline, &[table.name]).await?;
            let sql = format!(
                "SELECT kildesystem, omfang, as_of, kjelde, sha256, entitet, rad, post FROM {} \
                 WHERE as_of IN ({}) AND run_id <> '{}'",
                table.name,
                stored.join(", "),
                ctx.run_id
            );
            batches.extend(crate::delta::query(&session, &sql).await?);
        }
        let mut columns = Vec::with_capacity(batches.len());
        // Records are ordered by file name and record number below; a file ingested twice by
        // two runs at once is read once. Snapshot keys are numbered as met, files by
        // (name, sha256): a record's entry is numbers only.
        let mut key_numbers: HashMap<SnapshotKey, u32> = HashMap::new();
        let mut files: HashMap<(String, String), u32> = HashMap::new();
        let mut entries: Vec<(u32, u32, i64, u32, u32)> = Vec::new();
        for (bi, b) in batches.iter().enumerate() {
            let k = crate::delta::text(b, "kildesystem")?;
            let o = crate::delta::text(b, "omfang")?;
            let t = crate::delta::micros(b, "as_of")?;
            let kjelde = crate::delta::text(b, "kjelde")?;
            let sha = crate::delta::text(b, "sha256")?;
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
                        && kjelde.value(i) == kjelde.value(*p)
                        && sha.value(i) == sha.value(*p)
                        && k.value(i) == k.value(*p)
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
                    let wanted = !done.contains(&key) || rebuilt.contains(&key.0);
                    let n = key_numbers.len() as u32;
                    let kn = *key_numbers.entry(key).or_insert(n);
                    let n = files.len() as u32;
                    let f = *files
                        .entry((kjelde.value(i).to_string(), sha.value(i).to_string()))
                        .or_insert(n);
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
        // Snapshots by (as-of, source, scope); files by name (then sha256, for two versions of
        // one name); then record number. This run's rows usually are in that order already.
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
        let order =
            |e: &(u32, u32, i64, u32, u32)| (key_rank[e.0 as usize], rank[e.1 as usize], e.2);
        if !entries.is_sorted_by_key(order) {
            entries.sort_unstable_by_key(order);
        }
        // Two copies of one file (same name and sha256) give the same (file, record) twice.
        entries.dedup_by(|a, b| a.1 == b.1 && a.2 == b.2 && a.0 == b.0);
        let mut rows: Vec<Vec<(u32, u32)>> = vec![Vec::new(); keys.len()];
        for (kn, _, _, bi, i) in entries {
            rows[kn as usize].push((bi, i));
        }
        let columns = Arc::new(columns);
        for (key, kn) in keys {
            let rows = std::mem::take(&mut rows[kn as usize]);
            if rows.is_empty() {
                continue;
            }
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
    Ok(snaps.into_values().collect())
}

fn date_days(d: Option<NaiveDate>) -> Option<i32> {
    d.map(|d| (d - NaiveDate::default()).num_days() as i32)
}

/// One snapshot's validated rows as a batch in a staging table's schema. `column` gives the
/// values of each column by name (`None` for a column it does not know); the snapshot columns
/// are filled here.
fn stage_batch(
    schema: &SchemaRef,
    snap: &Snapshot,
    rows: usize,
    column: impl Fn(&str) -> Option<ArrayRef>,
) -> Result<RecordBatch> {
    let mut arrays = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        let array: ArrayRef = match f.name().as_str() {
            "stg_kildesystem" => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                snap.kildesystem.as_str(),
                rows,
            ))),
            "stg_omfang" => Arc::new(StringArray::from_iter(std::iter::repeat_n(
                snap.omfang.as_deref(),
                rows,
            ))),
            "stg_as_of" => Arc::new(
                TimestampMicrosecondArray::from(vec![snap.as_of; rows]).with_timezone("UTC"),
            ),
            // Assigned by publish.
            "id" | "elev_id" => arrow::array::new_null_array(f.data_type(), rows),
            name => column(name).ok_or_else(|| {
                crate::error::Error::Internal(format!("no staged values for column `{name}`"))
            })?,
        };
        arrays.push(array);
    }
    Ok(RecordBatch::try_new(schema.clone(), arrays)?)
}

fn texts<'r, T>(rows: &'r [T], f: impl Fn(&'r T) -> Option<&'r str>) -> Option<ArrayRef> {
    Some(Arc::new(StringArray::from_iter(rows.iter().map(f))))
}

fn dates<T>(rows: &[T], f: impl Fn(&T) -> Option<NaiveDate>) -> Option<ArrayRef> {
    Some(Arc::new(Date32Array::from_iter(
        rows.iter().map(|r| date_days(f(r))),
    )))
}

fn elev_batch(schema: &SchemaRef, snap: &Snapshot, rows: &[ElevRow<'_>]) -> Result<RecordBatch> {
    stage_batch(schema, snap, rows.len(), |name| match name {
        "system_id" => texts(rows, |e| e.system_id.as_deref()),
        "kildesystem" => texts(rows, |e| Some(e.r.kildesystem)),
        "fodselsnummer" => texts(rows, |e| e.fodselsnummer.as_deref()),
        "feidenavn" => texts(rows, |e| e.feidenavn.as_deref()),
        "kommunenummer" => texts(rows, |e| e.kommunenummer.as_deref()),
        "fornavn" => texts(rows, |e| e.fornavn.as_deref()),
        "mellomnavn" => texts(rows, |e| e.mellomnavn.as_deref()),
        "etternavn" => texts(rows, |e| e.etternavn.as_deref()),
        "fodselsdato" => dates(rows, |e| e.fodselsdato),
        "kjonn" => texts(rows, |e| e.kjonn.as_deref()),
        "epostadresse" => texts(rows, |e| e.epostadresse.as_deref()),
        "mobiltelefonnummer" => texts(rows, |e| e.mobiltelefonnummer.as_deref()),
        "bostedsadresse" => texts(rows, |e| e.bostedsadresse.as_deref()),
        "postnummer" => texts(rows, |e| e.postnummer.as_deref()),
        "poststed" => texts(rows, |e| e.poststed.as_deref()),
        "stg_kilde_nokkel" => texts(rows, |e| e.kilde_nokkel.as_deref()),
        _ => None,
    })
}

fn elevforhold_batch(
    schema: &SchemaRef,
    snap: &Snapshot,
    rows: &[EfRow<'_>],
) -> Result<RecordBatch> {
    stage_batch(schema, snap, rows.len(), |name| match name {
        "system_id" => texts(rows, |e| e.system_id.as_deref()),
        "kildesystem" => texts(rows, |e| Some(e.r.kildesystem)),
        "skolenummer" => texts(rows, |e| e.skolenummer.as_deref()),
        "klasse" => texts(rows, |e| e.klasse.as_deref()),
        "trinn" => Some(Arc::new(Int32Array::from_iter(
            rows.iter().map(|e| e.trinn),
        ))),
        "skolear" => texts(rows, |e| e.skolear.as_deref()),
        "hovedskole" => Some(Arc::new(BooleanArray::from_iter(
            rows.iter().map(|e| e.hovedskole),
        ))),
        "startdato" => dates(rows, |e| e.startdato),
        "sluttdato" => dates(rows, |e| e.sluttdato),
        "stg_kilde_nokkel" => texts(rows, |e| e.elev_kilde_nokkel.as_deref()),
        _ => None,
    })
}

fn skole_batch(schema: &SchemaRef, snap: &Snapshot, rows: &[SkoleRow<'_>]) -> Result<RecordBatch> {
    stage_batch(schema, snap, rows.len(), |name| match name {
        "skolenummer" => texts(rows, |s| Some(s.skolenummer.as_ref())),
        "organisasjonsnummer" => texts(rows, |s| s.organisasjonsnummer.as_deref()),
        "navn" => texts(rows, |s| s.navn.as_deref()),
        "kommunenummer" => texts(rows, |s| s.kommunenummer.as_deref()),
        "fylkesnummer" => texts(rows, |s| s.fylkesnummer.as_deref()),
        "eierform" => texts(rows, |s| s.eierform.as_deref()),
        "kildesystem" => texts(rows, |s| Some(s.r.kildesystem)),
        "stg_kilde_nokkel" => Some(arrow::array::new_null_array(&DataType::Utf8, rows.len())),
        _ => None,
    })
}

/// Current school numbers from the `skole` table (for references to schools not in a snapshot).
async fn known_schools(ctx: &RunContext) -> Result<HashSet<String>> {
    let session = crate::delta::session(&ctx.pipeline, &["skole"]).await?;
    let mut out = HashSet::new();
    if crate::delta::has_table(&session, "skole") {
        for b in
            crate::delta::query(&session, "SELECT skolenummer FROM skole WHERE is_current").await?
        {
            out.extend(
                crate::delta::strings(&b, "skolenummer")?
                    .iter()
                    .flatten()
                    .map(str::to_string),
            );
        }
    }
    Ok(out)
}

/// Standardizes every pending snapshot. The staged rows are returned; with `write_staging` they
/// are also written to the staging tables (`stg_*`) for a `publish` of its own.
pub async fn run(
    ctx: &RunContext,
    write_staging: bool,
    fresh: HashMap<String, Vec<RecordBatch>>,
) -> Result<StandardizeOutcome> {
    let mut steps = crate::context::Steps::new("standardize");
    let snaps = pending_snapshots(ctx, &fresh).await?;
    drop(fresh);
    steps.step("read pending snapshots from raw");
    let mut outcome = StandardizeOutcome {
        snapshots: snaps.iter().filter(|s| !s.published).count(),
        ..Default::default()
    };
    if snaps.is_empty() {
        info!("no new snapshots to standardize");
        outcome.staged = Some(StagedData::default());
        return Ok(outcome);
    }
    let known = known_schools(ctx).await?;
    let mut checker = Checker::new(&ctx.pipeline.file.quality);
    let today = ctx.started.date_naive();
    let schemas = [&schema::ELEV, &schema::ELEVFORHOLD, &schema::SKOLE]
        .map(|t| stage_table(t).arrow_schema());
    // Per table, one batch per snapshot.
    let mut batches: [Vec<RecordBatch>; 3] = Default::default();
    for snap in &snaps {
        steps.step("start snapshot");
        let mut staged = Staged::default();
        let input = SnapshotInput {
            kildesystem: &snap.kildesystem,
            omfang: snap.omfang.as_deref(),
            as_of: snap.as_of,
            kommunenummer: ctx.pipeline.kommunenummer(),
        };
        snap.format
            .flatten(&input, &mut snap.records(), &mut staged);
        // Deviations and metrics are about new snapshots only; a rebuilt source's published
        // snapshots were reported when they arrived.
        let mut scratch = Checker::new(&ctx.pipeline.file.quality);
        let c = if snap.published {
            &mut scratch
        } else {
            *outcome.rows_in.entry("elev").or_default() += staged.elev.len();
            *outcome.rows_in.entry("elevforhold").or_default() += staged.elevforhold.len();
            *outcome.rows_in.entry("skole").or_default() += staged.skole.len();
            &mut checker
        };
        c.snapshot = (snap.omfang.clone(), snap.as_of);
        steps.step("flatten");
        validate::validate(c, &mut staged, &known, today);
        steps.step("validate");
        if !snap.published {
            *outcome.rows_out.entry("elev").or_default() += staged.elev.len();
            *outcome.rows_out.entry("elevforhold").or_default() += staged.elevforhold.len();
            *outcome.rows_out.entry("skole").or_default() += staged.skole.len();
        }
        info!(
            source = %snap.kildesystem,
            scope = snap.omfang.as_deref().unwrap_or("-"),
            as_of = %crate::context::fmt_micros(snap.as_of),
            elev = staged.elev.len(),
            elevforhold = staged.elevforhold.len(),
            skole = staged.skole.len(),
            "standardized snapshot"
        );
        // The two large tables are built at the same time, on two cores.
        let (elev, ef) = crate::par::both(
            || elev_batch(&schemas[0], snap, &staged.elev),
            || elevforhold_batch(&schemas[1], snap, &staged.elevforhold),
        );
        batches[0].push(elev?);
        batches[1].push(ef?);
        batches[2].push(skole_batch(&schemas[2], snap, &staged.skole)?);
        steps.step("batches");
    }
    outcome.failures = checker.failures();
    outcome.avvik = checker.avvik.len();
    let [elev, elevforhold, skole] = batches;
    let tables = [
        (&schema::ELEV, elev),
        (&schema::ELEVFORHOLD, elevforhold),
        (&schema::SKOLE, skole),
    ];
    outcome.metrics = metrics::standardize_metrics(&outcome, &checker, &tables)?;
    steps.step("metrics");
    if !outcome.failures.is_empty() {
        warn!(failures = ?outcome.failures, "fail rules broken: nothing will be published");
    }
    if ctx.dry_run {
        return Ok(outcome);
    }
    let new_snapshots: Vec<SnapshotKey> = snaps
        .iter()
        .filter(|s| !s.published)
        .map(Snapshot::key)
        .collect();
    outcome.avvik_version = avvik::write(ctx, &checker.avvik, &new_snapshots).await?;
    steps.step("write avvik");
    crate::context::crash_point("after-avvik");
    let failed = !outcome.failures.is_empty();
    let mut staged = StagedData {
        snapshots: if failed {
            HashSet::new()
        } else {
            snaps.iter().map(Snapshot::key).collect()
        },
        ..Default::default()
    };
    for ((t, batches), schema) in tables.into_iter().zip(&schemas) {
        let batches = if failed {
            vec![RecordBatch::new_empty(schema.clone())]
        } else {
            batches
        };
        match t.name {
            "elev" => staged.elev = batches,
            "elevforhold" => staged.elevforhold = batches,
            _ => staged.skole = batches,
        }
    }
    if write_staging {
        let snapshots: Vec<SnapshotKey> = if failed {
            Vec::new()
        } else {
            snaps.iter().map(Snapshot::key).collect()
        };
        write_stage(ctx, &staged, &snapshots).await?;
        steps.step("write staging");
    }
    crate::context::crash_point("after-stage");
    outcome.staged = Some(staged);
    Ok(outcome)
}
