//! Standardize: turns the raw records of every snapshot not yet published into FINT rows for
//! `elev`, `elevforhold` and `skole` (staging tables `stg_*`), derives fields (birth date and
//! legacy gender from the fødselsnummer, split names), validates every row and writes the
//! deviations to `avvik` (docs/ARCHITECTURE.md, "Quality rules and deviations"). Rows are built
//! borrowing the raw records' text and go straight into Arrow columns. Its steps are files:
//!
//! - `snapshots.rs`: the pending snapshots' raw records, grouped and ordered;
//! - the source's format (`crate::formats`) flattens each into FINT rows;
//! - `validate.rs`: the rules, `stage.rs`: the staging batches;
//! - `avvik.rs`: the deviation list written, `metrics.rs`: what it measured.
//!
//! Not here: ids and history (publish), reading files (ingest).

mod avvik;
mod carry;
mod metrics;
mod records;
mod snapshots;
mod stage;
mod validate;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use arrow::array::RecordBatch;
use tracing::{info, warn};

use crate::context::{crash_point, RunContext, Steps};
use crate::error::Result;
use crate::fint::{Staged, Str};
use crate::formats::{RawRec, SnapshotInput};
use crate::ledger::{stage_table, write_stage, SnapshotKey, StagedData};
use crate::metrics::StandardizeMetrics;
use crate::quality::{fnr, Checker};
use crate::schema;
use snapshots::Snapshot;

/// A number with the separators people type stripped, borrowed when it has none.
fn normalized(v: Str<'_>) -> Str<'_> {
    match v.into_cow() {
        Cow::Borrowed(s) => fnr::normalize(s).into(),
        Cow::Owned(s) => {
            let stripped = match fnr::normalize(&s) {
                Cow::Owned(n) => Some(n),
                Cow::Borrowed(_) => None,
            };
            Str::owned(stripped.unwrap_or(s))
        }
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
    /// Incomplete snapshots held back (which, what is missing, which files came).
    pub held_back: Vec<String>,
    /// What it measured; `None` when there was nothing to standardize.
    pub metrics: Option<StandardizeMetrics>,
    /// The current state unchanged rows were carried forward against, for publish.
    pub preloaded: Option<crate::publish::Preloaded>,
    /// Rows carried forward (pupils and elevforhold).
    pub carried: usize,
    /// Of those, pupils and elevforhold whose records were carried unread
    /// (docs/ARCHITECTURE.md, "Carried records").
    pub records_carried: usize,
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
    (fresh, watches): (HashMap<String, Vec<RecordBatch>>, crate::storage::Watches),
) -> Result<StandardizeOutcome> {
    let mut steps = Steps::new("standardize");
    let snapshots::Pending {
        snapshots: snaps,
        held_back,
        rebuilt,
    } = snapshots::pending(ctx, &fresh).await?;
    drop(fresh);
    steps.step("read pending snapshots from raw");
    let mut outcome = StandardizeOutcome {
        snapshots: snaps.iter().filter(|s| !s.published).count(),
        held_back: held_back
            .iter()
            .map(snapshots::HeldBack::describe)
            .collect(),
        ..Default::default()
    };
    for h in &held_back {
        warn!(snapshot = %h.describe(), "incomplete snapshot held back until its missing parts arrive");
    }
    if snaps.is_empty() {
        info!("no new snapshots to standardize");
        outcome.staged = Some(StagedData::default());
        return Ok(outcome);
    }
    // Only the one new whole-source snapshot of a source is carried: not a rebuilt source's (a
    // late or corrected snapshot: its history is applied again from every snapshot, so every
    // row must be staged), not one of several of a day. (A published snapshot is here only when
    // its source is rebuilt.)
    let carries_rows: Vec<bool> = (snaps.iter())
        .map(|snap| {
            !rebuilt.contains(&snap.kildesystem)
                && snap.omfang.is_none()
                && snaps
                    .iter()
                    .filter(|s| s.kildesystem == snap.kildesystem)
                    .count()
                    == 1
        })
        .collect();
    // Records carried unread (docs/ARCHITECTURE.md, "Carried records") are hashed first, then
    // the exports' pages are given back before the current state is loaded: the state and the
    // mapped exports are not resident at once. The few records read after that are read again
    // from their files, not through the mappings.
    let mut hashed: Vec<Option<records::Hashed<'_>>> = (snaps.iter().zip(&carries_rows))
        .map(|(snap, &carries)| {
            let spec = snap.format.carried_records();
            let read_whole = snap.published || write_staging || ctx.dry_run;
            spec.filter(|_| carries && !read_whole)
                .and_then(|spec| records::Hashed::of(snap, spec))
        })
        .collect();
    steps.step("hash carried records");
    if hashed.iter().any(Option::is_some) {
        crate::storage::give_back(&watches);
    }
    // Unchanged rows are carried forward against the current state (docs/ARCHITECTURE.md,
    // "Carried rows") when this run hands its rows to publish itself; it is read while the
    // schools are.
    let (known, preloaded) = tokio::join!(known_schools(ctx), async {
        match write_staging || ctx.dry_run {
            true => Ok(None),
            false => crate::publish::preload(ctx).await,
        }
    });
    let (known, preloaded) = (known?, preloaded?);
    let index = preloaded
        .as_ref()
        .map(crate::publish::Preloaded::carry_index);
    let memo = preloaded.as_ref().and_then(crate::publish::Preloaded::memo);
    let identity = preloaded
        .as_ref()
        .and_then(crate::publish::Preloaded::identity);
    steps.step("current state for carrying rows forward");
    let mut carried_nulls = carry::CarriedNulls::new();
    let mut carries = HashMap::new();
    let mut checker = Checker::new(&ctx.pipeline.file.quality);
    // The staging schemas, made once (a staging table's definition is built, not constant).
    let schemas = [&schema::ELEV, &schema::ELEVFORHOLD, &schema::SKOLE]
        .map(|t| stage_table(t).arrow_schema());
    // Per table (elev, elevforhold, skole), one batch per snapshot.
    let mut batches: [Vec<RecordBatch>; 3] = Default::default();
    for (i, snap) in snaps.iter().enumerate() {
        steps.step("start snapshot");
        let mut carried = Carried {
            hashed: hashed[i].take(),
            index: index.as_ref().filter(|_| carries_rows[i]),
            memo,
            identity,
            watches: &watches,
            nulls: &mut carried_nulls,
            out: None,
        };
        let [elev, ef, skole] = standardize_snapshot(
            ctx,
            snap,
            &schemas,
            &known,
            &mut checker,
            &mut outcome,
            &mut steps,
            &mut carried,
        )
        // What a file cut short read as (zeros) may fail in any way: that it changed is the
        // error to report.
        .map_err(|e| changed(&watches).err().unwrap_or(e))?;
        if let Some(c) = carried.out {
            outcome.carried += c.carried();
            outcome.records_carried += c.records_carried;
            carries.insert(snap.key(), c);
        }
        batches[0].push(elev);
        batches[1].push(ef);
        batches[2].push(skole);
        steps.step("batches");
    }
    drop(index);
    // The files this run read mapped are read for the last time above (docs/ARCHITECTURE.md,
    // "Reading local files"): one that changed meanwhile stops the run before anything of it is
    // written but raw, which has it as it was.
    changed(&watches)?;
    drop(watches);
    outcome.failures = checker.failures();
    outcome.avvik = checker.avvik.len();
    let [elev, elevforhold, skole] = batches;
    let tables = [
        (&schema::ELEV, elev),
        (&schema::ELEVFORHOLD, elevforhold),
        (&schema::SKOLE, skole),
    ];
    outcome.metrics = Some(metrics::measure(
        &outcome,
        &checker,
        &tables,
        &carried_nulls,
    ));
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
    crash_point("after-avvik");
    // A broken `fail` rule stages nothing: publish finds no snapshot to apply.
    let staged = match outcome.failures.is_empty() {
        true => StagedData {
            snapshots: snaps.iter().map(Snapshot::key).collect(),
            elev: tables[0].1.clone(),
            elevforhold: tables[1].1.clone(),
            skole: tables[2].1.clone(),
            carry: carries,
        },
        false => StagedData {
            snapshots: HashSet::new(),
            elev: vec![RecordBatch::new_empty(schemas[0].clone())],
            elevforhold: vec![RecordBatch::new_empty(schemas[1].clone())],
            skole: vec![RecordBatch::new_empty(schemas[2].clone())],
            carry: HashMap::new(),
        },
    };
    drop(tables);
    if write_staging {
        let keys: Vec<SnapshotKey> = staged.snapshots.iter().cloned().collect();
        write_stage(ctx, &staged, &keys).await?;
        steps.step("write staging");
    }
    crash_point("after-stage");
    outcome.staged = Some(staged);
    outcome.preloaded = preloaded;
    Ok(outcome)
}

/// `Ok` when the files read mapped are unchanged, else the error for the first that changed
/// (after raw's commit: raw has them as they were read).
fn changed(watches: &crate::storage::Watches) -> Result<()> {
    crate::storage::unchanged(
        watches,
        "raw has it as it was when read, nothing after raw was written",
    )
}

/// How a snapshot's unchanged rows are carried forward: its records hashed, the index
/// of the current state (`None`: nothing is carried), the summaries of records carried unread,
/// and what was carried.
struct Carried<'i, 's> {
    /// The snapshot's records hashed; `None` when its rows may not be carried.
    hashed: Option<records::Hashed<'s>>,
    index: Option<&'i crate::publish::CarryIndex<'i>>,
    memo: Option<&'i crate::carried::Memo>,
    identity: Option<&'i crate::publish::identity::Identity>,
    /// The mapped exports, given back: what is read of them is read again from their files.
    watches: &'i crate::storage::Watches,
    nulls: &'i mut carry::CarriedNulls,
    out: Option<crate::ledger::SnapshotCarry>,
}

/// One snapshot: flattened by its format, validated, and built into the staging batches of
/// elev, elevforhold and skole. Deviations and metrics are about new snapshots only; a rebuilt
/// source's published snapshots were reported when they arrived.
#[allow(clippy::too_many_arguments)]
fn standardize_snapshot(
    ctx: &RunContext,
    snap: &Snapshot,
    schemas: &[arrow::datatypes::SchemaRef; 3],
    known: &HashSet<String>,
    checker: &mut Checker,
    outcome: &mut StandardizeOutcome,
    steps: &mut Steps,
    carried: &mut Carried<'_, '_>,
) -> Result<[RecordBatch; 3]> {
    let input = SnapshotInput {
        kildesystem: &snap.kildesystem,
        omfang: snap.omfang.as_deref(),
        as_of: snap.as_of,
        kommunenummer: ctx.pipeline.kommunenummer(),
    };
    // Records carried unread (docs/ARCHITECTURE.md, "Carried records"): hashed and found in
    // the summaries before anything is read, when the snapshot's rows may be carried at all.
    let quality = format!("{:?}", ctx.pipeline.file.quality);
    let mut plan = (carried.hashed.take())
        .zip(snap.format.carried_records())
        .map(|(hashed, spec)| {
            let fingerprint = [
                snap.format.name().as_bytes(),
                snap.kildesystem.as_bytes(),
                input.kommunenummer.as_bytes(),
                quality.as_bytes(),
            ];
            records::Plan::make(
                snap,
                hashed,
                spec,
                &fingerprint,
                carried.memo.filter(|_| carried.index.is_some()),
                carried.identity,
                ctx.pipeline.file.sources.len() == 1,
            )
        });
    steps.step("find carried records");
    // (elev, elevforhold, skole) rows read, and those of them kept, besides the carried ones.
    let count = |staged: &Staged<'_>, (pupils, enrollments): (usize, usize)| {
        [
            ("elev", staged.elev.len() + pupils),
            ("elevforhold", staged.elevforhold.len() + enrollments),
            ("skole", staged.skole.len()),
        ]
    };
    let mut scratch = Checker::new(&ctx.pipeline.file.quality);
    let c = if snap.published {
        &mut scratch
    } else {
        checker
    };
    c.snapshot = (snap.omfang.clone(), snap.as_of);
    let today = ctx.started.date_naive();
    let (avvik_before, failed_before) = (c.avvik.len(), c.failed.clone());
    let unread = plan.as_ref().map_or((0, 0), records::Plan::carried);
    // With records carried, the rest of the carried entities' records (a day's changes, spread
    // through the exports) are read again from their files: through the mappings given back,
    // each would bring a large folio around it back (docs/ARCHITECTURE.md, "Reading local
    // files"). The other entities' records are read as they are.
    let read: Option<Vec<(RawRec<'_>, Cow<'_, str>)>> = match (&plan, snap.format.carried_records())
    {
        (Some(p), Some(spec)) if unread != (0, 0) => {
            let again = |e: &str| e == spec.entity || Some(e) == spec.pupils;
            let records: Vec<RawRec<'_>> = snap.records().filter(p.reads()).collect();
            Some(crate::par::chunks(records.len(), |range| {
                records[range]
                    .iter()
                    .map(|r| match again(r.entitet) {
                        true => (*r, crate::storage::read_again(carried.watches, r.post)),
                        false => (*r, Cow::Borrowed(r.post)),
                    })
                    .collect()
            }))
        }
        _ => None,
    };
    steps.step("records read again");
    let mut staged = Staged::default();
    match &read {
        Some(read) => snap.format.flatten(
            &input,
            &mut read.iter().map(|(r, post)| RawRec { post, ..*r }),
            &mut staged,
        ),
        None => snap
            .format
            .flatten(&input, &mut snap.records(), &mut staged),
    }
    let mut rows_in = count(&staged, unread);
    steps.step("flatten");
    // The carried records are read where the plan holds them (docs/ARCHITECTURE.md, "Carried
    // records"); none without a plan.
    let kept = match plan.as_ref().map(records::Plan::for_validation) {
        Some(carried) => validate::validate(c, &mut staged, (carried.0, &carried.1), known, today),
        None => validate::validate(c, &mut staged, validate::NOTHING_CARRIED, known, today),
    };
    if !kept {
        // A carried record would not be kept as it is: what was found is dropped and the
        // snapshot read the full way.
        info!("a record carried unread is drawn into a deviation: every record is read");
        c.avvik.truncate(avvik_before);
        c.failed = failed_before;
        if let Some(p) = plan.as_mut() {
            p.read_all();
        }
        staged = Staged::default();
        snap.format
            .flatten(&input, &mut snap.records(), &mut staged);
        rows_in = count(&staged, (0, 0));
        if !validate::validate(c, &mut staged, validate::NOTHING_CARRIED, known, today) {
            return Err(crate::error::Error::Internal(
                "validation without carried records asked to read them".into(),
            ));
        }
    }
    steps.step("validate");
    let unread = plan.as_ref().map_or((0, 0), records::Plan::carried);
    if !snap.published {
        for ((table, n_in), (_, n_out)) in rows_in.into_iter().zip(count(&staged, unread)) {
            *outcome.rows_in.entry(table).or_default() += n_in;
            *outcome.rows_out.entry(table).or_default() += n_out;
        }
    }
    // Records with a deviation of this snapshot get no summary: they are read again.
    let deviant: std::collections::HashSet<(&str, i64)> = c.avvik[avvik_before..]
        .iter()
        .map(|a| (a.record.kjelde.as_str(), a.record.rad))
        .collect();
    let clean = |kjelde: &str, rad: i64| !deviant.contains(&(kjelde, rad));
    info!(
        source = %snap.kildesystem,
        scope = snap.omfang.as_deref().unwrap_or("-"),
        as_of = %crate::context::fmt_micros(snap.as_of),
        elev = staged.elev.len(),
        elevforhold = staged.elevforhold.len(),
        skole = staged.skole.len(),
        "standardized snapshot"
    );
    let c = carry::carry(
        snap,
        &mut staged,
        carried.index,
        carried.nulls,
        plan,
        &clean,
    )?;
    if c.carried() > 0 {
        info!(
            elev = c.elev_ids.len() + c.elev_unread.len(),
            elevforhold = c.elevforhold_ids.len(),
            unread = c.records_carried,
            "rows unchanged since the last publish carried forward"
        );
    }
    carried.out = Some(c);
    steps.step("carry unchanged rows");
    // One table after the other, each on every core (a column a core), and each table's staged
    // rows dropped once its batch is made: both tables' rows and both batches are never held at
    // once (docs/ARCHITECTURE.md, "Stages and the data between them").
    let elev = stage::elev_batch(&schemas[0], snap, &std::mem::take(&mut staged.elev))?;
    let ef = stage::elevforhold_batch(&schemas[1], snap, &std::mem::take(&mut staged.elevforhold))?;
    let skole = stage::skole_batch(&schemas[2], snap, &staged.skole)?;
    Ok([elev, ef, skole])
}
