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
mod snapshots;
mod stage;
mod validate;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use arrow::array::RecordBatch;
use tracing::{info, warn};

use crate::context::{crash_point, RunContext, Steps};
use crate::error::Result;
use crate::fint::Staged;
use crate::formats::SnapshotInput;
use crate::ledger::{stage_table, write_stage, SnapshotKey, StagedData};
use crate::metrics::StandardizeMetrics;
use crate::quality::{fnr, Checker};
use crate::schema;
use snapshots::Snapshot;

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
    /// Incomplete snapshots held back (which, what is missing, which files came).
    pub held_back: Vec<String>,
    /// What it measured; `None` when there was nothing to standardize.
    pub metrics: Option<StandardizeMetrics>,
    /// The current state unchanged rows were carried forward against, for publish.
    pub preloaded: Option<crate::publish::Preloaded>,
    /// Rows carried forward (pupils and elevforhold).
    pub carried: usize,
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
    steps.step("current state for carrying rows forward");
    let mut carried_nulls = carry::CarriedNulls::new();
    let mut carries = HashMap::new();
    let mut checker = Checker::new(&ctx.pipeline.file.quality);
    // The staging schemas, made once (a staging table's definition is built, not constant).
    let schemas = [&schema::ELEV, &schema::ELEVFORHOLD, &schema::SKOLE]
        .map(|t| stage_table(t).arrow_schema());
    // Per table (elev, elevforhold, skole), one batch per snapshot.
    let mut batches: [Vec<RecordBatch>; 3] = Default::default();
    for snap in &snaps {
        steps.step("start snapshot");
        // Only the one new whole-source snapshot of a source is carried: not a rebuilt
        // source's (a late or corrected snapshot: its history is applied again from every
        // snapshot, so every row must be staged), not one of several of a day.
        // (A published snapshot is here only when its source is rebuilt.)
        let carries_rows = !rebuilt.contains(&snap.kildesystem)
            && snap.omfang.is_none()
            && snaps
                .iter()
                .filter(|s| s.kildesystem == snap.kildesystem)
                .count()
                == 1;
        let mut carried = Carried {
            index: index.as_ref().filter(|_| carries_rows),
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
        )?;
        if let Some(c) = carried.out {
            outcome.carried += c.carried();
            carries.insert(snap.key(), c);
        }
        batches[0].push(elev);
        batches[1].push(ef);
        batches[2].push(skole);
        steps.step("batches");
    }
    drop(index);
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

/// How a snapshot's unchanged rows are carried forward: the index of the current state
/// (`None`: nothing is carried), and what was carried.
struct Carried<'i> {
    index: Option<&'i crate::publish::CarryIndex<'i>>,
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
    carried: &mut Carried<'_>,
) -> Result<[RecordBatch; 3]> {
    let mut staged = Staged::default();
    let input = SnapshotInput {
        kildesystem: &snap.kildesystem,
        omfang: snap.omfang.as_deref(),
        as_of: snap.as_of,
        kommunenummer: ctx.pipeline.kommunenummer(),
    };
    snap.format
        .flatten(&input, &mut snap.records(), &mut staged);
    let count = |counts: &mut BTreeMap<&'static str, usize>, staged: &Staged<'_>| {
        *counts.entry("elev").or_default() += staged.elev.len();
        *counts.entry("elevforhold").or_default() += staged.elevforhold.len();
        *counts.entry("skole").or_default() += staged.skole.len();
    };
    let mut scratch = Checker::new(&ctx.pipeline.file.quality);
    let c = if snap.published {
        &mut scratch
    } else {
        count(&mut outcome.rows_in, &staged);
        checker
    };
    c.snapshot = (snap.omfang.clone(), snap.as_of);
    steps.step("flatten");
    validate::validate(c, &mut staged, known, ctx.started.date_naive());
    steps.step("validate");
    if !snap.published {
        count(&mut outcome.rows_out, &staged);
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
    let c = carry::carry(snap, &mut staged, carried.index, carried.nulls)?;
    if c.carried() > 0 {
        info!(
            elev = c.elev_ids.len(),
            elevforhold = c.elevforhold_ids.len(),
            "rows unchanged since the last publish carried forward"
        );
    }
    carried.out = Some(c);
    steps.step("carry unchanged rows");
    // The two large tables are built at the same time, on two cores.
    let (elev, ef) = crate::par::both(
        || stage::elev_batch(&schemas[0], snap, &staged.elev),
        || stage::elevforhold_batch(&schemas[1], snap, &staged.elevforhold),
    );
    let skole = stage::skole_batch(&schemas[2], snap, &staged.skole)?;
    Ok([elev?, ef?, skole])
}
