//! The snapshot ledger: which snapshots exist, which are published (`leveranse`), which sources
//! must have their history rebuilt, and the staging tables that hand standardized snapshots from
//! a `standardize` to a `publish` run on its own. Standardize and publish both ask it; neither
//! asks the other (docs/ARCHITECTURE.md, "The snapshot ledger").

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray};
use deltalake::protocol::SaveMode;

use crate::context::RunContext;
use crate::error::{Error, Result};
use crate::schema::{self, Table};

/// A snapshot: (kildesystem, omfang, as-of in µs). All records of one source that share a scope
/// and an as-of time.
pub type SnapshotKey = (String, Option<String>, i64);

/// Standardized snapshots for publish: the snapshot keys and the rows of elev, elevforhold and
/// skole (in the staging tables' schema).
#[derive(Debug, Default, Clone)]
pub struct StagedData {
    pub snapshots: HashSet<SnapshotKey>,
    pub elev: Vec<arrow::array::RecordBatch>,
    pub elevforhold: Vec<arrow::array::RecordBatch>,
    pub skole: Vec<arrow::array::RecordBatch>,
    /// Per snapshot standardized in this run: the staged-row hashes and the rows carried
    /// forward (docs/ARCHITECTURE.md, "Carried rows"). Empty when read from the staging tables.
    pub carry: HashMap<SnapshotKey, SnapshotCarry>,
}

/// What publish needs of a snapshot's rows beyond the staged batches: the hash of every staged
/// elev and elevforhold row (in the order of the snapshot's staged rows), and the rows that
/// standardize found equal to their current version and did not stage: pupils with what
/// identity resolution needs (`stg_kilde_nokkel`, `system_id`, `fodselsnummer`) and their ids,
/// elevforhold by their ids (UUIDs as their 128 bits, high half first).
#[derive(Debug, Default, Clone)]
pub struct SnapshotCarry {
    pub elev_hashes: Vec<u64>,
    pub elevforhold_hashes: Vec<u64>,
    pub elev: Option<RecordBatch>,
    pub elev_ids: Vec<[u64; 2]>,
    pub elevforhold_ids: Vec<[u64; 2]>,
    /// Summaries of the records to carry unread on the next day (docs/ARCHITECTURE.md,
    /// "Carried records"), given their ids by publish and kept with the current state.
    pub records: Option<crate::carried::Made>,
    /// Of the carried rows, those whose records were carried unread (pupils and elevforhold).
    pub records_carried: usize,
    /// Pupils carried unread: their numbers in the identity map standardize read (publish must
    /// use that map) and the ids of their current versions.
    pub elev_unread: Vec<(u32, [u64; 2])>,
}

impl SnapshotCarry {
    /// Rows carried forward (pupils and elevforhold).
    pub fn carried(&self) -> usize {
        self.elev_ids.len() + self.elev_unread.len() + self.elevforhold_ids.len()
    }
}

/// Snapshots published and not delivered again since: from `leveranse`, less those that got
/// a file after they were published (a corrected export under the same name and date, or the
/// complete file after one read while it was still being written). A re-delivered snapshot is
/// pending again: it replaces the earlier delivery in history (docs/ARCHITECTURE.md, "Guards
/// against a bad delivery").
pub async fn published(ctx: &RunContext) -> Result<HashSet<SnapshotKey>> {
    let at = published_at(ctx).await?;
    let Some(&oldest) = at.values().min() else {
        return Ok(HashSet::new());
    };
    let delivered = delivered_since(ctx, oldest).await?;
    Ok(at
        .into_iter()
        .filter(|(k, publisert)| delivered.get(k).is_none_or(|l| l <= publisert))
        .map(|(k, _)| k)
        .collect())
}

/// When each snapshot was last published.
async fn published_at(ctx: &RunContext) -> Result<HashMap<SnapshotKey, i64>> {
    let session = crate::delta::session(&ctx.pipeline, &["leveranse"]).await?;
    let mut out: HashMap<SnapshotKey, i64> = HashMap::new();
    if !crate::delta::has_table(&session, "leveranse") {
        return Ok(out);
    }
    let sql =
        "SELECT kildesystem, omfang, as_of, max(publisert) AS p FROM leveranse GROUP BY 1, 2, 3";
    for b in crate::delta::query(&session, sql).await? {
        let k = crate::delta::strings(&b, "kildesystem")?;
        let o = crate::delta::strings(&b, "omfang")?;
        let t = crate::delta::micros(&b, "as_of")?;
        let p = crate::delta::micros(&b, "p")?;
        for i in 0..b.num_rows() {
            out.insert((k.value(i).to_string(), opt(&o, i), t.value(i)), p.value(i));
        }
    }
    Ok(out)
}

/// The newest ingest time (`lastet`) of each snapshot's files ingested after `since`, from the
/// files' marker rows in the raw tables (whole raw files older than `since` are skipped by their
/// statistics).
async fn delivered_since(ctx: &RunContext, since: i64) -> Result<HashMap<SnapshotKey, i64>> {
    let mut out = HashMap::new();
    for source in &ctx.pipeline.file.sources {
        let table = schema::raw_table(&source.name);
        let session = crate::delta::session(&ctx.pipeline, &[table.name]).await?;
        if !crate::delta::has_table(&session, table.name) {
            continue;
        }
        let sql = format!(
            "SELECT kildesystem, omfang, as_of, max(lastet) AS l FROM {} \
             WHERE lastet > to_timestamp_micros({since}) AND entitet = '{}' GROUP BY 1, 2, 3",
            table.name,
            crate::formats::FILE_MARKER
        );
        for b in crate::delta::query(&session, &sql).await? {
            let k = crate::delta::strings(&b, "kildesystem")?;
            let o = crate::delta::strings(&b, "omfang")?;
            let t = crate::delta::micros(&b, "as_of")?;
            let l = crate::delta::micros(&b, "l")?;
            for i in 0..b.num_rows() {
                out.insert((k.value(i).to_string(), opt(&o, i), t.value(i)), l.value(i));
            }
        }
    }
    Ok(out)
}

/// Records snapshots as published (`leveranse`): the ledger's answer to "is this snapshot
/// published?" from then on. Returns the version written, if any.
pub async fn record_published(ctx: &RunContext, snapshots: &[SnapshotKey]) -> Result<Option<i64>> {
    if snapshots.is_empty() {
        return Ok(None);
    }
    let t = &schema::LEVERANSE;
    let now = chrono::Utc::now().timestamp_micros();
    let batch = t.batch(vec![
        ("kildesystem", snapshot_column(snapshots, 0)),
        ("omfang", snapshot_column(snapshots, 1)),
        ("as_of", snapshot_column(snapshots, 2)),
        (
            "run_id",
            Arc::new(StringArray::from(vec![
                ctx.run_id.as_str();
                snapshots.len()
            ])),
        ),
        (
            "publisert",
            Arc::new(
                TimestampMicrosecondArray::from(vec![now; snapshots.len()]).with_timezone("UTC"),
            ),
        ),
    ])?;
    crate::delta::append(ctx, t, batch, "publish").await
}

/// Sources whose pending snapshots do not simply follow the stored history: a late snapshot
/// (older than history already stored for the source), or a publish that was interrupted after
/// some tables were committed. Their history is rebuilt from all their snapshots, in as-of order.
pub async fn rebuild_sources(
    ctx: &RunContext,
    pending: &[SnapshotKey],
    done: &HashSet<SnapshotKey>,
) -> Result<HashSet<String>> {
    let mut oldest: HashMap<&str, i64> = HashMap::new();
    for (k, _, t) in pending {
        let e = oldest.entry(k.as_str()).or_insert(*t);
        *e = (*e).min(*t);
    }
    let mut newest: HashMap<String, i64> = HashMap::new();
    // The usual day's snapshots are newer than any stored time, which the tables' file
    // statistics tell without reading a row; otherwise the stored times are read.
    let bounds = match oldest.is_empty() {
        true => Some((HashMap::new(), i64::MIN)),
        false => newest_by_statistics(ctx).await?,
    };
    let after_all = |(k, t): (&&str, &i64)| {
        bounds.as_ref().is_some_and(|(per_source, any)| {
            *t > per_source.get(*k).copied().unwrap_or(i64::MIN).max(*any)
        })
    };
    let tables: &[&str] = match oldest.iter().all(after_all) {
        true => &[],
        false => &schema::SCD2_NAMES,
    };
    tracing::debug!(
        stored_times_read = !tables.is_empty(),
        "rebuild check: the pending snapshots against the stored history"
    );
    let session = crate::delta::session(&ctx.pipeline, tables).await?;
    for t in tables {
        if !crate::delta::has_table(&session, t) {
            continue;
        }
        let sql = format!(
            "SELECT kildesystem, max(greatest(valid_from, coalesce(valid_to, valid_from))) AS t FROM {t} GROUP BY kildesystem"
        );
        for b in crate::delta::query(&session, &sql).await? {
            let k = crate::delta::strings(&b, "kildesystem")?;
            let m = crate::delta::micros(&b, "t")?;
            for i in 0..b.num_rows() {
                if let Some(k) = opt(&k, i) {
                    let e = newest.entry(k).or_insert(i64::MIN);
                    *e = (*e).max(m.value(i));
                }
            }
        }
    }
    // Snapshots that changed nothing leave no trace in the history: count the published ones.
    for (k, _, t) in done {
        let e = newest.entry(k.clone()).or_insert(i64::MIN);
        *e = (*e).max(*t);
    }
    Ok(oldest
        .into_iter()
        .filter(|(k, t)| newest.get(*k).is_some_and(|n| t <= n))
        .map(|(k, _)| k.to_string())
        .collect())
}

/// Upper bounds of the newest `valid_from`/`valid_to` stored per source in the SCD2 tables, from
/// their files' statistics: per source for a file of one source, and one for files of several
/// (`None` when a file's statistics do not tell). Delta statistics keep timestamps to the
/// millisecond, so each bound is raised by 999 µs.
async fn newest_by_statistics(ctx: &RunContext) -> Result<Option<(HashMap<String, i64>, i64)>> {
    let (mut per_source, mut any) = (HashMap::new(), i64::MIN);
    for t in schema::SCD2_NAMES {
        let Some(table) = crate::delta::try_open(&ctx.pipeline.table_url(t)).await? else {
            continue;
        };
        for f in crate::delta::file_views(&table).await? {
            let Some(stats) = f.stats().and_then(|s| serde_json::from_str(&s).ok()) else {
                return Ok(None);
            };
            let Some((source, newest)) = file_newest(&stats) else {
                return Ok(None);
            };
            let bound = match source {
                Some(k) => per_source.entry(k).or_insert(i64::MIN),
                None => &mut any,
            };
            *bound = (*bound).max(newest.saturating_add(999));
        }
    }
    Ok(Some((per_source, any)))
}

/// Source names this long or longer may be cut short in file statistics.
const STATS_PREFIX: usize = 32;

/// A file's newest `valid_from`/`valid_to` by its statistics, with its source when it holds one
/// only; `None` when the statistics do not tell (a file without rows has no newest time).
fn file_newest(stats: &serde_json::Value) -> Option<(Option<String>, i64)> {
    let rows = stats["numRecords"].as_i64()?;
    if rows == 0 {
        return Some((None, i64::MIN));
    }
    let micros = |column: &str| {
        let text = stats["maxValues"][column].as_str()?;
        Some(
            chrono::DateTime::parse_from_rfc3339(text)
                .ok()?
                .timestamp_micros(),
        )
    };
    let mut newest = micros(schema::VALID_FROM)?;
    if stats["nullCount"][schema::VALID_TO].as_i64()? < rows {
        newest = newest.max(micros(schema::VALID_TO)?);
    }
    // Writers may cut a string's bounds short (at 32 characters, say): a longer source name
    // could be a prefix that several sources share, so its file counts for every source.
    let source = |which: &str| stats[which]["kildesystem"].as_str();
    let one = match (source("minValues"), source("maxValues")) {
        (Some(min), Some(max)) if min == max && min.chars().count() < STATS_PREFIX => {
            Some(min.to_string())
        }
        _ => None,
    };
    Some((one, newest))
}

async fn read_staged(ctx: &RunContext, t: &Table) -> Result<Vec<RecordBatch>> {
    let stage = stage_table(t);
    let session = crate::delta::session(&ctx.pipeline, &[stage.name]).await?;
    if !crate::delta::has_table(&session, stage.name) {
        return Ok(Vec::new());
    }
    crate::delta::query(&session, &format!("SELECT * FROM {}", stage.name)).await
}

/// The staged snapshots: handed over by `run`, or read from the staging tables.
pub async fn staged_data(ctx: &RunContext, given: Option<StagedData>) -> Result<StagedData> {
    if let Some(s) = given {
        return Ok(s);
    }
    Ok(StagedData {
        snapshots: staged_snapshots(ctx).await?,
        elev: read_staged(ctx, &schema::ELEV).await?,
        elevforhold: read_staged(ctx, &schema::ELEVFORHOLD).await?,
        skole: read_staged(ctx, &schema::SKOLE).await?,
        carry: HashMap::new(),
    })
}

/// The run id in the newest commit of a table.
async fn last_run_id(ctx: &RunContext, table: &str) -> Result<Option<String>> {
    use futures::TryStreamExt;
    let Some(t) = crate::delta::try_open(&ctx.pipeline.table_url(table)).await? else {
        return Ok(None);
    };
    let infos: Vec<_> = t.history(Some(1)).try_collect().await?;
    Ok(infos
        .first()
        .and_then(|c| c.info.get("elevflyt_run_id"))
        .and_then(|v| v.as_str())
        .map(str::to_string))
}

/// The snapshots the last standardize staged, once it is sure that standardize finished: every
/// staging table carries the run id of the same standardize.
async fn staged_snapshots(ctx: &RunContext) -> Result<HashSet<SnapshotKey>> {
    let t = &schema::STAGE_SNAPSHOTS;
    let session = crate::delta::session(&ctx.pipeline, &[t.name]).await?;
    let mut out = HashSet::new();
    if !crate::delta::has_table(&session, t.name) {
        return Ok(out);
    }
    let run = last_run_id(ctx, t.name).await?;
    for table in schema::SCD2_TABLES {
        if last_run_id(ctx, &table.stage_name()).await? != run {
            return Err(Error::StaleStaging);
        }
    }
    for b in crate::delta::query(&session, &format!("SELECT * FROM {}", t.name)).await? {
        let k = crate::delta::strings(&b, "stg_kildesystem")?;
        let o = crate::delta::strings(&b, "stg_omfang")?;
        let a = crate::delta::micros(&b, "stg_as_of")?;
        for i in 0..b.num_rows() {
            out.insert((k.value(i).to_string(), opt(&o, i), a.value(i)));
        }
    }
    Ok(out)
}

/// Writes the staging tables: the rows, then the snapshot list — publish takes staging as
/// complete only when every staging table was written by the same standardize run. A snapshot
/// may have no rows at all (a school list with no pupils).
pub async fn write_stage(
    ctx: &RunContext,
    staged: &StagedData,
    snapshots: &[SnapshotKey],
) -> Result<()> {
    for (t, batches) in [
        (&schema::ELEV, &staged.elev),
        (&schema::ELEVFORHOLD, &staged.elevforhold),
        (&schema::SKOLE, &staged.skole),
    ] {
        crate::delta::write(
            &ctx.pipeline,
            &stage_table(t),
            batches.clone(),
            SaveMode::Overwrite,
            &ctx.run_id,
            "standardize",
        )
        .await?;
    }
    let batch = schema::STAGE_SNAPSHOTS.batch(vec![
        ("stg_kildesystem", snapshot_column(snapshots, 0)),
        ("stg_omfang", snapshot_column(snapshots, 1)),
        ("stg_as_of", snapshot_column(snapshots, 2)),
    ])?;
    crate::delta::write(
        &ctx.pipeline,
        &schema::STAGE_SNAPSHOTS,
        vec![batch],
        SaveMode::Overwrite,
        &ctx.run_id,
        "standardize",
    )
    .await?;
    Ok(())
}

/// The staging table of an SCD2 table.
pub fn stage_table(t: &schema::Table) -> schema::Table {
    let mut cols: Vec<schema::Column> = t.business_columns().copied().collect();
    cols.extend(schema::STAGE_EXTRA.iter().copied());
    for c in cols.iter_mut() {
        c.nullable = true;
    }
    schema::Table {
        name: Box::leak(t.stage_name().into_boxed_str()),
        description: "Intern: standardiserte rader som ventar på publisering.",
        kind: schema::Kind::Overwrite,
        key: None,
        partition_by: &[],
        columns: Box::leak(cols.into_boxed_slice()),
    }
}

/// One part of the snapshot keys as a column: 0 kildesystem, 1 omfang, 2 as-of.
fn snapshot_column(snapshots: &[SnapshotKey], part: usize) -> ArrayRef {
    match part {
        0 => Arc::new(StringArray::from_iter_values(
            snapshots.iter().map(|s| s.0.as_str()),
        )),
        1 => Arc::new(StringArray::from_iter(
            snapshots.iter().map(|s| s.1.as_deref()),
        )),
        _ => Arc::new(
            TimestampMicrosecondArray::from_iter_values(snapshots.iter().map(|s| s.2))
                .with_timezone("UTC"),
        ),
    }
}

fn opt(a: &StringArray, i: usize) -> Option<String> {
    (!a.is_null(i)).then(|| a.value(i).to_string())
}

#[cfg(test)]
mod tests {
    /// A file's newest stored time from its statistics: `valid_to` counts when the file has
    /// closed versions; the source only when the file holds one; statistics that do not tell
    /// give no bound.
    #[test]
    fn a_files_newest_time_is_read_from_its_statistics() {
        let stats = |v: serde_json::Value| super::file_newest(&v);
        let at = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .timestamp_micros()
        };
        let current = serde_json::json!({
            "numRecords": 3,
            "minValues": {"valid_from": "2026-01-10T00:00:00Z", "kildesystem": "vigilo"},
            "maxValues": {"valid_from": "2026-01-15T08:30:00.123Z", "kildesystem": "vigilo"},
            "nullCount": {"valid_to": 3}
        });
        assert_eq!(
            stats(current),
            Some((Some("vigilo".into()), at("2026-01-15T08:30:00.123Z")))
        );
        let closed = serde_json::json!({
            "numRecords": 3,
            "minValues": {"valid_from": "2026-01-10T00:00:00Z", "kildesystem": "ims"},
            "maxValues": {"valid_from": "2026-01-12T00:00:00Z", "valid_to": "2026-02-01T00:00:00Z", "kildesystem": "vigilo"},
            "nullCount": {"valid_to": 1}
        });
        assert_eq!(stats(closed), Some((None, at("2026-02-01T00:00:00Z"))));
        let long = "k".repeat(super::STATS_PREFIX);
        let cut = serde_json::json!({
            "numRecords": 1,
            "minValues": {"valid_from": "2026-01-10T00:00:00Z", "kildesystem": long},
            "maxValues": {"valid_from": "2026-01-10T00:00:00Z", "kildesystem": long},
            "nullCount": {"valid_to": 1}
        });
        assert_eq!(
            stats(cut),
            Some((None, at("2026-01-10T00:00:00Z"))),
            "a name that may be cut short counts for every source"
        );
        for unknown in [
            serde_json::json!({"numRecords": 3}),
            serde_json::json!({"numRecords": 3, "maxValues": {"valid_from": "2026-01-12T00:00:00Z"}}),
            serde_json::json!({"numRecords": 3, "maxValues": {"valid_from": "2026-01-12T00:00:00Z"}, "nullCount": {"valid_to": 1}}),
            serde_json::json!({"numRecords": 3, "maxValues": {"valid_from": "2026-01-12"}, "nullCount": {"valid_to": 3}}),
        ] {
            assert_eq!(stats(unknown.clone()), None, "{unknown}");
        }
    }
}
