//! Ingest: lists each source location through `object_store`, reads each new file once, and
//! appends its records as delivered to `raw_<source>` with lineage (file, sha256, as-of, scope).
//! A file whose sha256 is already in `raw_<source>` is skipped, so re-running writes nothing; a
//! file with the name, size and modification time of one already read is skipped without being
//! read again (the quick check of rsync and make), so a daily run does not re-read the history
//! left in the source location.
//!
//! Not here: interpreting records (standardize) or any validation beyond "can this file be read".

mod overlay;
pub mod pull;
pub mod text;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Int64Builder, RecordBatch, StringBuilder, StringViewBuilder};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::config::SourceConfig;
use crate::context::RunContext;
use crate::error::Result;
use crate::formats::asof;
use crate::schema::raw_table;
use crate::storage::SourceFile;

pub use crate::formats::FILE_MARKER;
use crate::formats::{ParsedFile, Record};

/// What ingest did, per source.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct IngestOutcome {
    pub files_seen: usize,
    pub files_read: Vec<String>,
    pub files_skipped: usize,
    pub records: usize,
    pub bytes: u64,
    pub raw_versions: Vec<(String, i64)>,
    /// The sources pulled from an API.
    pub pulls: Vec<pull::PullSummary>,
    /// The raw rows committed, per source (handed to standardize by `run`).
    #[serde(skip)]
    pub committed: HashMap<String, Vec<RecordBatch>>,
    /// The files of `committed` read mapped (`source/file`), to ask again once standardize has
    /// read them (docs/ARCHITECTURE.md, "Reading local files").
    #[serde(skip)]
    pub watches: crate::storage::Watches,
}

impl IngestOutcome {
    /// What ingest measured, for `kvalitet`.
    pub fn measured(&self) -> crate::metrics::IngestMetrics {
        crate::metrics::IngestMetrics {
            files_read: self.files_read.len(),
            files_skipped: self.files_skipped,
            records: self.records,
        }
    }
}

/// Ingests every source of the pipeline.
pub async fn run(ctx: &RunContext) -> Result<IngestOutcome> {
    let mut m = IngestOutcome::default();
    for source in &ctx.pipeline.file.sources {
        ingest_source(ctx, source, &mut m).await?;
    }
    Ok(m)
}

/// The files already in raw.
#[derive(Default)]
struct Known {
    /// sha256 → the as-of times the file was loaded for.
    digests: HashMap<String, HashSet<i64>>,
    /// (file, size, modified µs) → sha256, from the marker records that have them.
    stamps: HashMap<(String, u64, i64), String>,
    /// The pages of each pull (as-of → (URL, sha256, page)), for API sources.
    pulls: std::collections::BTreeMap<i64, Vec<(String, String, PageStamp)>>,
}

/// A pulled page's place in its pull (`ingest::pull`), in its marker record.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct PageStamp {
    part: String,
    number: u32,
    records: usize,
    collection_records: usize,
}

/// What a file's marker record holds besides its lineage: the file's size and modification
/// time when it was read.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stamp {
    bytes: u64,
    modified_us: i64,
    /// The parts of a snapshot the file holds (`Format::required_parts`); absent in files
    /// ingested before they were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parts: Option<Vec<String>>,
    /// The parts that came as changes only (laid over the previous snapshot: `overlay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delta: Option<Vec<String>>,
    /// A page pulled from an API: which collection, which page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    page: Option<PageStamp>,
}

impl Known {
    /// The sha256 of a listed file already read, by name, size and modification time.
    fn digest_of(&self, f: &SourceFile) -> Option<&String> {
        self.stamps
            .get(&(f.name.clone(), f.size, f.last_modified.timestamp_micros()))
    }
}

async fn known_files(table: Option<&deltalake::DeltaTable>) -> Result<Known> {
    let mut out = Known::default();
    let Some(table) = table else {
        return Ok(out);
    };
    let session = deltalake::datafusion::prelude::SessionContext::new();
    crate::delta::register(&session, "raw", table).await?;
    // Every file has one marker row (see `file_batch`): the files are read from those rows only.
    for b in &crate::delta::query(
        &session,
        &format!(
            "SELECT DISTINCT kjelde, sha256, as_of, post FROM raw WHERE entitet = '{FILE_MARKER}'"
        ),
    )
    .await?
    {
        let file = crate::delta::strings(b, "kjelde")?;
        let sha = crate::delta::strings(b, "sha256")?;
        let t = crate::delta::micros(b, "as_of")?;
        let post = crate::delta::strings(b, "post")?;
        for i in 0..b.num_rows() {
            out.digests
                .entry(sha.value(i).to_string())
                .or_default()
                .insert(t.value(i));
            // Files ingested before the stamp was recorded have `{}`: they are hashed again.
            if let Ok(stamp) = serde_json::from_str::<Stamp>(post.value(i)) {
                if let Some(page) = stamp.page.clone() {
                    out.pulls.entry(t.value(i)).or_default().push((
                        file.value(i).to_string(),
                        sha.value(i).to_string(),
                        page,
                    ));
                }
                out.stamps.insert(
                    (file.value(i).to_string(), stamp.bytes, stamp.modified_us),
                    sha.value(i).to_string(),
                );
            }
        }
    }
    Ok(out)
}

/// Whether a file was already ingested. The same bytes under a later date are a new snapshot
/// (an unchanged export still says "everyone is still here" at that date, which matters when an
/// older export arrives late); without a date in the name or on the command line, the same bytes
/// are the same file.
fn already_ingested(known: &Known, sha: &str, cheap_as_of: Option<i64>) -> bool {
    match (known.digests.get(sha), cheap_as_of) {
        (None, _) => false,
        (Some(times), Some(t)) => times.contains(&t),
        (Some(_), None) => true,
    }
}

/// Ingests one source. Two runs ingesting at once must not both append the same file: the raw
/// commit claims the source (a Delta application transaction), the loser finds the winner's
/// files already there and tries again with what is left.
async fn ingest_source(
    ctx: &RunContext,
    source: &SourceConfig,
    m: &mut IngestOutcome,
) -> Result<()> {
    let table = raw_table(&source.name);
    let is_conflict = |e: &crate::error::Error| matches!(e, crate::error::Error::Conflict(_));
    let this = crate::context::retry_on_conflict(table.name, is_conflict, async |_| {
        let mut this = IngestOutcome::default();
        ingest_source_once(ctx, source, &mut this)
            .await
            .map(|()| this)
    })
    .await?;
    m.files_seen += this.files_seen;
    m.files_read.extend(this.files_read);
    m.files_skipped += this.files_skipped;
    m.records += this.records;
    m.bytes += this.bytes;
    m.raw_versions.extend(this.raw_versions);
    m.pulls.extend(this.pulls);
    m.committed.extend(this.committed);
    m.watches.extend(this.watches);
    Ok(())
}

/// A file read and hashed, not ingested before.
struct NewFile<'f> {
    file: &'f SourceFile,
    /// Its bytes, and when they map the file the watch asked again after they are used
    /// (docs/ARCHITECTURE.md, "Reading local files").
    read: crate::storage::SourceBytes,
    digest: String,
    /// The as-of time from `--as-of` or the file's name, when there is one.
    cheap_as_of: Option<DateTime<Utc>>,
}

async fn ingest_source_once(
    ctx: &RunContext,
    source: &SourceConfig,
    m: &mut IngestOutcome,
) -> Result<()> {
    let root = ctx.pipeline.source_location(source)?;
    if let (Some(api), "http" | "https") = (source.format()?.api(), root.scheme()) {
        return pull_source(ctx, source, api, &root, m).await;
    }
    let mut steps = crate::context::Steps::new("ingest");
    let table = raw_table(&source.name);
    let mut files = crate::storage::list_files(&root, &source.include).await?;
    let listed = files.len();
    if let Some(until) = ctx.until {
        files.retain(|f| asof::from_file_name(&f.name).is_none_or(|t| t <= until));
        if files.len() < listed {
            info!(source = %source.name, files = listed - files.len(), until = %until, "files dated later wait for a later run (--until)");
        }
    }
    // The append below is committed on top of exactly the version read here, so that a run
    // that appended in between makes it conflict instead of duplicating files.
    let existing = crate::delta::try_open(&ctx.pipeline.table_url(table.name)).await?;
    let read_version = existing.as_ref().and_then(|t| t.version()).unwrap_or(0);
    let mut known = known_files(existing.as_ref()).await?;
    steps.step("list files and read what raw has");
    m.files_seen += files.len();
    if listed == 0 {
        if !source.optional {
            return Err(crate::error::Error::NoFiles {
                source_name: source.name.clone(),
                location: root.to_string(),
            });
        }
        warn!(source = %source.name, location = %root, "no files found at the (optional) source location");
    }
    let new_files = read_new_files(ctx, source, &root, &files, &known, m).await?;
    steps.step("read and hash files");
    refuse_collapsed_dates(ctx, &new_files)?;
    // Parsed on all cores; the raw rows are committed at once.
    let format = source.format()?;
    let parsed = crate::par::map(&new_files, |f| parse_file(ctx, source, &table, format, f));
    steps.step("parse files");
    crate::context::crash_point("after-parse");
    let mut batches = Vec::new();
    // Back in the listing's order (by name) for the rows written.
    // A mapped file changed while it was parsed is skipped as one changed while it was read,
    // whatever its parse found (what was past a cut end read as zeros).
    let mut parsed: Vec<_> = (new_files.iter().zip(parsed))
        .filter(|(f, _)| {
            let unchanged = f.read.unchanged();
            if !unchanged {
                changed_while_read(source, f.file, m);
            }
            unchanged
        })
        .collect();
    parsed.sort_by(|a, b| a.0.file.name.cmp(&b.0.file.name));
    let parsed = parsed
        .into_iter()
        .map(|(f, r)| r.map(|r| (f, r)))
        .collect::<Result<Vec<_>>>()?;
    let mut parsed = one_time_for_undated(parsed)?;
    // Changes-only deliveries are laid over the snapshot before them, so files go in time order.
    let any_delta = parsed
        .iter()
        .any(|(_, (b, _, _))| marker_stamp(b).is_some_and(|s| s.delta.is_some()));
    if any_delta {
        parsed.sort_by(|a, b| (a.1 .2, &a.0.file.name).cmp(&(b.1 .2, &b.0.file.name)));
    }
    let mut seen = overlay::Seen::new();
    let mut watches = Vec::new();
    for (f, (batch, records, t)) in parsed {
        refuse_future(ctx, &f.file.name, t)?;
        // The same file twice in one listing is read once.
        let cheap = f.cheap_as_of.map(|t| t.timestamp_micros());
        if already_ingested(&known, &f.digest, cheap) {
            m.files_skipped += 1;
            continue;
        }
        known
            .digests
            .entry(f.digest.clone())
            .or_default()
            .insert(t.timestamp_micros());
        info!(source = %source.name, file = %f.file.name, records, as_of = %t, "read file");
        let batch = if any_delta {
            lay_over_previous(
                &table,
                batch,
                t.timestamp_micros(),
                existing.as_ref(),
                &mut seen,
                &f.file.name,
            )
            .await?
        } else {
            batch
        };
        m.records += records;
        m.bytes += f.file.size;
        let name = format!("{}/{}", source.name, f.file.name);
        if let Some(w) = &f.read.watch {
            watches.push((name.clone(), w.clone()));
        }
        m.files_read.push(name);
        batches.push(batch);
    }
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if rows == 0 || ctx.dry_run {
        return Ok(());
    }
    // Raw's rows are views of the files read: a file that changed before they are written
    // stops the run before raw's commit.
    let unchanged = || {
        crate::context::crash_point("before-raw-commit");
        crate::storage::unchanged(&watches, "nothing of this run was committed")
    };
    append_raw(ctx, source, &table, batches, read_version, &unchanged, m).await?;
    m.watches.extend(watches);
    steps.step("write raw");
    crate::context::crash_point("after-raw");
    Ok(())
}

/// Appends a source's new raw rows on top of the version read (claiming the table, see
/// `ingest_source`) and hands them to standardize.
async fn append_raw(
    ctx: &RunContext,
    source: &SourceConfig,
    table: &crate::schema::Table,
    batches: Vec<RecordBatch>,
    read_version: u64,
    before_commit: &(dyn Fn() -> Result<()> + Sync),
    m: &mut IngestOutcome,
) -> Result<()> {
    if let (Some(v), _) = crate::delta::write_claimed_groups(
        &ctx.pipeline,
        table,
        markers_apart(&batches),
        read_version,
        (&ctx.run_id, "ingest"),
        before_commit,
    )
    .await?
    {
        m.raw_versions.push((table.name.to_string(), v));
    }
    m.committed.insert(source.name.clone(), batches);
    Ok(())
}

/// A file's rows as written to raw: the marker records of all files in one group, in a file of
/// their own, and the records in another (docs/ARCHITECTURE.md, "Stages"): the queries for the
/// markers (`entitet = '_fil'`) then skip every file of records by its statistics, instead of
/// reading the `entitet` of every record ever ingested. Slices: nothing is copied.
fn markers_apart(batches: &[RecordBatch]) -> Vec<Vec<RecordBatch>> {
    let mut markers = Vec::with_capacity(batches.len());
    let mut records = Vec::with_capacity(batches.len());
    for b in batches {
        let first_is_marker = (crate::delta::text(b, "entitet").ok())
            .is_some_and(|e| b.num_rows() > 0 && e.opt(0) == Some(FILE_MARKER));
        match first_is_marker {
            true => {
                markers.push(b.slice(0, 1));
                records.push(b.slice(1, b.num_rows() - 1));
            }
            false => records.push(b.clone()),
        }
    }
    vec![markers, records]
}

/// The stamp in a file's marker record (its first row).
fn marker_stamp(batch: &RecordBatch) -> Option<Stamp> {
    let post = crate::delta::text(batch, "post").ok()?;
    (batch.num_rows() > 0)
        .then(|| serde_json::from_str(post.value(0)).ok())
        .flatten()
}

/// A file's delta parts laid over the newest earlier snapshot of each (from this run, else from
/// raw); every part it holds becomes the newest seen. A delta with nothing to lay over is refused.
async fn lay_over_previous(
    table: &crate::schema::Table,
    mut batch: RecordBatch,
    t: i64,
    existing: Option<&deltalake::DeltaTable>,
    seen: &mut overlay::Seen,
    file: &str,
) -> Result<RecordBatch> {
    let stamp = marker_stamp(&batch);
    let delta = stamp
        .as_ref()
        .and_then(|s| s.delta.clone())
        .unwrap_or_default();
    for part in &delta {
        let from_run = seen.get(part).filter(|(at, _)| *at < t).cloned();
        let previous = match from_run {
            Some(p) => Some(p),
            None => overlay::stored(existing, part, t).await?,
        };
        let Some((_, previous)) = previous else {
            return Err(crate::error::Error::input(
                file,
                None,
                format!(
                    "the manifest says `file.{part} = delta`, and there is no earlier snapshot of {part} to lay the changes over: deliver a bulk file first"
                ),
            ));
        };
        batch = overlay::lay_over(table, batch, part, &previous)?;
    }
    for part in stamp.and_then(|s| s.parts).unwrap_or_default() {
        let rows = overlay::of_batch(&batch, &part)?;
        seen.insert(part, (t, rows));
    }
    Ok(batch)
}

/// How far in the future an as-of time may be: a file named for tomorrow's date, written late
/// in the evening in Norway, is already "tomorrow" at 00:00 UTC.
pub const FUTURE_TOLERANCE: chrono::Duration = chrono::Duration::hours(36);

/// A file dated (by name, `--as-of` or its `dateLastModified`) later than now plus
/// [`FUTURE_TOLERANCE`] would freeze the current state until that date: refused.
fn refuse_future(ctx: &RunContext, file: &str, t: DateTime<Utc>) -> Result<()> {
    if t <= ctx.started + FUTURE_TOLERANCE {
        return Ok(());
    }
    Err(crate::error::Error::input(
        file,
        None,
        format!(
            "the file is dated {} (from its name, --as-of or its dateLastModified), later than \
             now ({}); a snapshot from the future would hide every later delivery until then. \
             Correct the date, or remove the file from the source location",
            crate::context::fmt_micros(t.timestamp_micros()),
            crate::context::fmt_micros(ctx.started.timestamp_micros()),
        ),
    ))
}

/// `--as-of` gives every file of the run one time: refused when the new files carry different
/// dates in their names, which it would merge into one snapshot.
fn refuse_collapsed_dates(ctx: &RunContext, files: &[NewFile<'_>]) -> Result<()> {
    let Some(given) = ctx.as_of_override else {
        return Ok(());
    };
    let mut dated: Vec<(DateTime<Utc>, &str)> = files
        .iter()
        .filter_map(|f| asof::from_file_name(&f.file.name).map(|t| (t, f.file.name.as_str())))
        .collect();
    dated.sort();
    dated.dedup_by_key(|(t, _)| *t);
    if dated.len() < 2 {
        return Ok(());
    }
    let list: Vec<String> = dated
        .iter()
        .map(|(t, f)| format!("{f} ({})", t.date_naive()))
        .collect();
    Err(crate::error::Error::Usage(format!(
        "--as-of {} would merge files of {} different dates into one snapshot: {}; run without \
         --as-of (the dates in the names are used), or ingest one date at a time",
        given.date_naive(),
        dated.len(),
        list.join(", ")
    )))
}

/// The undated files of one source in one run (no date in the name, none given) are one
/// snapshot: each gets the newest of their times (`dateLastModified` or modification time),
/// instead of a snapshot of its own seconds apart from the others.
fn one_time_for_undated<'f>(parsed: Vec<Parsed<'f>>) -> Result<Vec<Parsed<'f>>> {
    let undated = |f: &NewFile<'_>| f.cheap_as_of.is_none();
    let Some(newest) = parsed
        .iter()
        .filter(|(f, _)| undated(f))
        .map(|(_, (_, _, t))| *t)
        .max()
    else {
        return Ok(parsed);
    };
    parsed
        .into_iter()
        .map(|(f, (batch, n, t))| {
            if !undated(f) || t == newest {
                return Ok((f, (batch, n, t)));
            }
            let batch = with_as_of(batch, newest)?;
            Ok((f, (batch, n, newest)))
        })
        .collect()
}

/// A new file with its raw rows, number of records and as-of time.
type Parsed<'f> = (&'f NewFile<'f>, (RecordBatch, usize, DateTime<Utc>));

/// A raw batch with every row's `as_of` set to `t`.
fn with_as_of(batch: RecordBatch, t: DateTime<Utc>) -> Result<RecordBatch> {
    let i = batch.schema().index_of("as_of")?;
    let mut columns = batch.columns().to_vec();
    columns[i] = Arc::new(
        arrow::array::TimestampMicrosecondArray::from(vec![t.timestamp_micros(); batch.num_rows()])
            .with_timezone("UTC"),
    );
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// Reads and hashes the files not ingested before, a few at a time, on all cores; the bytes of
/// a file already ingested are dropped right away. Files read before, unchanged by name, size
/// and modification time, are not read again.
async fn read_new_files<'f>(
    ctx: &RunContext,
    source: &SourceConfig,
    root: &url::Url,
    files: &'f [SourceFile],
    known: &Known,
    m: &mut IngestOutcome,
) -> Result<Vec<NewFile<'f>>> {
    let progress = progress_bar(files.len() as u64, &source.name);
    let as_of_of = |f: &SourceFile| ctx.as_of_override.or_else(|| asof::from_file_name(&f.name));
    let (mut files, unchanged): (Vec<&SourceFile>, Vec<_>) = files.iter().partition(|f| {
        !known.digest_of(f).is_some_and(|sha| {
            already_ingested(known, sha, as_of_of(f).map(|t| t.timestamp_micros()))
        })
    });
    m.files_skipped += unchanged.len();
    progress.inc(unchanged.len() as u64);
    // Largest first, so that the large files of a day are hashed at the same time rather than
    // one of them alone, and parsed largest first.
    files.sort_by_key(|f| std::cmp::Reverse(f.size));
    let mut new_files = Vec::new();
    for chunk in files.chunks(crate::par::cores()) {
        let reads = futures::future::try_join_all(chunk.iter().map(|&f| async move {
            Ok::<_, crate::error::Error>((f, crate::storage::read_unchanged(root, f).await?))
        }))
        .await?;
        let reads: Vec<_> = reads
            .into_iter()
            .filter_map(|(f, read)| {
                if read.is_none() {
                    changed_while_read(source, f, m);
                    progress.inc(1);
                }
                read.map(|r| (f, r))
            })
            .collect();
        let digests = crate::par::map(&reads, |(_, read)| hex::encode(Sha256::digest(&read.bytes)));
        for ((file, read), digest) in reads.into_iter().zip(digests) {
            progress.inc(1);
            // A mapped file is known whole only once every byte has been read (by the hash).
            if !read.unchanged() {
                changed_while_read(source, file, m);
                continue;
            }
            let cheap_as_of = as_of_of(file);
            if already_ingested(known, &digest, cheap_as_of.map(|t| t.timestamp_micros())) {
                m.files_skipped += 1;
                continue;
            }
            new_files.push(NewFile {
                file,
                read,
                digest,
                cheap_as_of,
            });
        }
    }
    progress.finish_and_clear();
    Ok(new_files)
}

/// A file whose size or modification time changed while it was read (its producer is still
/// writing it): skipped with a warning, read whole by a later run.
fn changed_while_read(source: &SourceConfig, file: &SourceFile, m: &mut IngestOutcome) {
    warn!(source = %source.name, file = %file.name, "the file changed while it was read (still being written?): skipped, it is read by the next run");
    m.files_skipped += 1;
}

/// One file's raw rows, its number of records and its as-of time.
fn parse_file(
    ctx: &RunContext,
    source: &SourceConfig,
    table: &crate::schema::Table,
    format: &dyn crate::formats::Format,
    f: &NewFile<'_>,
) -> Result<(RecordBatch, usize, DateTime<Utc>)> {
    let text;
    let parsed = match format.parse_bytes(&f.file.name, &f.read.bytes, f.cheap_as_of.is_none()) {
        Some(parsed) => parsed?,
        None => {
            text = text::decode(&f.file.name, &f.read.bytes)?.0;
            format.parse(&f.file.name, &text, f.cheap_as_of.is_none())?
        }
    };
    let t = f
        .cheap_as_of
        .or(parsed.newest_modified)
        .unwrap_or(f.file.last_modified);
    let stamp = Stamp {
        bytes: f.file.size,
        modified_us: f.file.last_modified.timestamp_micros(),
        parts: Some(parsed.parts.iter().map(|p| p.to_string()).collect()),
        delta: (!parsed.delta.is_empty())
            .then(|| parsed.delta.iter().map(|p| p.to_string()).collect()),
        page: None,
    };
    let batch = file_batch(
        table,
        &FileLineage {
            run: &ctx.run_id,
            source: &source.name,
            file: &f.file.name,
            digest: &f.digest,
            as_of_micros: t.timestamp_micros(),
            now: ctx.started.timestamp_micros(),
        },
        &stamp,
        &parsed,
        Some(&f.read.bytes),
    )?;
    Ok((batch, parsed.records.len(), t))
}

/// Ingests a source read from its API: pulls every page (nothing is written unless all of
/// them arrive), then appends them as one snapshot at the pull's time, each page a raw "file"
/// named by its URL. A pull that gives exactly the pages of the previous one adds nothing.
async fn pull_source(
    ctx: &RunContext,
    source: &SourceConfig,
    api: &'static crate::formats::Api,
    root: &url::Url,
    m: &mut IngestOutcome,
) -> Result<()> {
    let mut steps = crate::context::Steps::new("ingest");
    let table = raw_table(&source.name);
    let format = source.format()?;
    let existing = crate::delta::try_open(&ctx.pipeline.table_url(table.name)).await?;
    let read_version = existing.as_ref().and_then(|t| t.version()).unwrap_or(0);
    let known = known_files(existing.as_ref()).await?;
    let last = known.pulls.iter().next_back();
    let previous = last.map(|(t, pages)| {
        let mut sizes = HashMap::new();
        for (_, _, p) in pages {
            sizes.insert(p.part.clone(), p.collection_records);
        }
        pull::Previous {
            as_of: DateTime::from_timestamp_micros(*t).unwrap_or_default(),
            collection_records: sizes,
        }
    });
    steps.step("read what raw has");
    let (pages, mut summary) = pull::pull(source, format, api, root, previous.as_ref()).await?;
    steps.step("pull");
    let Some(pages) = pages else {
        m.pulls.push(summary);
        return Ok(());
    };
    let digests = crate::par::map(&pages, |p| hex::encode(Sha256::digest(&p.bytes)));
    let mut now: Vec<(&str, &str)> = pages
        .iter()
        .zip(&digests)
        .map(|(p, d)| (p.url.as_str(), d.as_str()))
        .collect();
    now.sort_unstable();
    if let Some((t, before)) = last {
        let mut before: Vec<(&str, &str)> = before
            .iter()
            .map(|(u, d, _)| (u.as_str(), d.as_str()))
            .collect();
        before.sort_unstable();
        if before == now {
            info!(source = %source.name, since = %crate::context::fmt_micros(*t), "the API gave the same pages as the previous pull: no new snapshot");
            summary.unchanged = true;
            m.pulls.push(summary);
            return Ok(());
        }
    }
    let t = ctx.as_of_override.unwrap_or(ctx.started);
    let batches = crate::par::map(&pages.iter().zip(&digests).collect::<Vec<_>>(), |(p, d)| {
        let text = std::str::from_utf8(&p.bytes)
            .map_err(|e| crate::error::Error::input(&p.url, None, format!("not UTF-8: {e}")))?;
        let parsed = format.parse(&p.url, text, false)?;
        let stamp = Stamp {
            bytes: p.bytes.len() as u64,
            modified_us: t.timestamp_micros(),
            parts: Some(parsed.parts.iter().map(|p| p.to_string()).collect()),
            delta: None,
            page: Some(PageStamp {
                part: p.part.to_string(),
                number: p.number,
                records: p.records,
                collection_records: p.collection_records,
            }),
        };
        file_batch(
            &table,
            &FileLineage {
                run: &ctx.run_id,
                source: &source.name,
                file: &p.url,
                digest: d,
                as_of_micros: t.timestamp_micros(),
                now: ctx.started.timestamp_micros(),
            },
            &stamp,
            &parsed,
            None,
        )
    })
    .into_iter()
    .collect::<Result<Vec<_>>>()?;
    steps.step("parse pages");
    m.records += summary.records;
    m.bytes += summary.bytes;
    m.files_read
        .push(format!("{}/{root} ({} pages)", source.name, summary.pages));
    m.pulls.push(summary);
    if ctx.dry_run {
        return Ok(());
    }
    append_raw(ctx, source, &table, batches, read_version, &|| Ok(()), m).await?;
    steps.step("write raw");
    crate::context::crash_point("after-raw");
    Ok(())
}

/// What every raw row of a file carries.
struct FileLineage<'a> {
    run: &'a str,
    source: &'a str,
    file: &'a str,
    digest: &'a str,
    as_of_micros: i64,
    now: i64,
}

/// The raw rows of one file: a marker record (so that a file without records, a school list
/// with no pupils, still makes a snapshot; its post holds the file's size and modification
/// time), then its records.
fn file_batch(
    table: &crate::schema::Table,
    l: &FileLineage<'_>,
    stamp: &Stamp,
    parsed: &ParsedFile<'_>,
    read: Option<&bytes::Bytes>,
) -> Result<RecordBatch> {
    let n = parsed.records.len() + 1;
    let time = |v: i64| {
        Arc::new(arrow::array::TimestampMicrosecondArray::from(vec![v; n]).with_timezone("UTC"))
            as arrow::array::ArrayRef
    };
    let marker = Record {
        entitet: FILE_MARKER,
        rad: 0,
        post: serde_json::to_string(stamp)
            .unwrap_or_else(|_| "{}".into())
            .into(),
    };
    let records = || std::iter::once(&marker).chain(&parsed.records);
    // Every buffer at its final size: a buffer that grows is copied whole into memory the
    // system must fault in and zero again.
    let entitet_bytes = records().map(|r| r.entitet.len()).sum();
    let omfang_bytes = parsed.omfang.as_deref().map_or(0, str::len) * n;
    let mut omfang = StringBuilder::with_capacity(n, omfang_bytes);
    let mut entitet = StringBuilder::with_capacity(n, entitet_bytes);
    let mut rad = Int64Builder::with_capacity(n);
    let mut post = Posts::new(n, read);
    for r in records() {
        omfang.append_option(parsed.omfang.as_deref());
        entitet.append_value(r.entitet);
        rad.append_value(r.rad);
        post.push(&r.post);
    }
    table.batch(vec![
        ("run_id", repeated(l.run, n)),
        ("kildesystem", repeated(l.source, n)),
        ("kjelde", repeated(l.file, n)),
        ("sha256", repeated(l.digest, n)),
        ("as_of", time(l.as_of_micros)),
        ("omfang", Arc::new(omfang.finish())),
        ("entitet", Arc::new(entitet.finish())),
        ("rad", Arc::new(rad.finish())),
        ("post", Arc::new(post.builder.finish())),
        ("lastet", time(l.now)),
    ])
}

/// `n` times the text `v`, as string views of one copy of it (a file's name and digest repeat
/// on each of its million records).
fn repeated(v: &str, n: usize) -> arrow::array::ArrayRef {
    let mut b = StringViewBuilder::with_capacity(n);
    let block = b.append_block(arrow::buffer::Buffer::from(v.as_bytes().to_vec()));
    let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
    for _ in 0..n {
        // SAFETY: `block` was appended just above and holds exactly the bytes of `v`, so
        // `0..len` is within it (a file name longer than 4 GB cannot be listed), and they are
        // valid UTF-8, being a `&str`.
        unsafe { b.append_view_unchecked(block, 0, len) };
    }
    Arc::new(b.finish())
}

/// The raw `post` column: records as string views of the file's bytes as read, where the
/// format gave them as slices of it — not a copy of the file (docs/ARCHITECTURE.md, "Stages");
/// other records (decoded from Windows-1252, the marker) are copied into a block of their own.
struct Posts {
    builder: StringViewBuilder,
    /// The file's block in `builder`, and where its bytes are in memory.
    file: Option<(u32, std::ops::Range<usize>)>,
}

impl Posts {
    fn new(n: usize, read: Option<&bytes::Bytes>) -> Posts {
        let mut builder = StringViewBuilder::with_capacity(n);
        // A view's offset is 32 bits: a file of 4 GB or more is copied.
        let file = read.filter(|b| b.len() < u32::MAX as usize).map(|b| {
            let at = b.as_ptr() as usize;
            let block = builder.append_block(arrow::buffer::Buffer::from(b.clone()));
            (block, at..at + b.len())
        });
        Posts { builder, file }
    }

    fn push(&mut self, post: &str) {
        let start = post.as_ptr() as usize;
        match &self.file {
            Some((block, bytes)) if start >= bytes.start && start + post.len() <= bytes.end => {
                // SAFETY: `block` was appended by `new` and is the file's bytes, which lie at
                // `bytes` in memory; `post` lies within them (checked just above), so its
                // offset and length are within the block, and it is valid UTF-8, being a
                // `&str`. Both fit 32 bits: the block is shorter than 4 GB.
                unsafe {
                    self.builder.append_view_unchecked(
                        *block,
                        (start - bytes.start) as u32,
                        post.len() as u32,
                    )
                };
            }
            _ => self.builder.append_value(post),
        }
    }
}

/// A progress bar on an interactive terminal only (hidden in logs, pipes and CI).
fn progress_bar(len: u64, source: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} files")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(format!("ingest {source}"));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, StringViewArray};

    /// The records of a file are views of its bytes, not a copy; a record that is not a slice
    /// of them (decoded, or the marker) is copied; the rows write as the table's layout.
    #[test]
    fn records_are_views_of_the_file_read() {
        let text =
            r#"{"users": [{"sourcedId": "a", "givenName": "Kari Nordmann"}, {"sourcedId": "bb"}]}"#;
        let read = bytes::Bytes::from(text.as_bytes().to_vec());
        let shown = std::str::from_utf8(&read).unwrap();
        let slice = |record: &str| {
            let at = shown.find(record).unwrap();
            &shown[at..at + record.len()]
        };
        let first = slice(r#"{"sourcedId": "a", "givenName": "Kari Nordmann"}"#);
        let second = slice(r#"{"sourcedId": "bb"}"#);
        let owned = "{\"sourcedId\": \"\u{e6}\u{f8}\u{e5} decoded, not a slice\"}";
        let parsed = ParsedFile {
            records: vec![
                Record {
                    entitet: "users",
                    rad: 1,
                    post: first.into(),
                },
                Record {
                    entitet: "users",
                    rad: 2,
                    post: second.into(),
                },
                Record {
                    entitet: "users",
                    rad: 3,
                    post: owned.to_string().into(),
                },
            ],
            newest_modified: None,
            omfang: None,
            delta: Vec::new(),
            parts: vec!["users"],
        };
        let stamp = Stamp {
            bytes: read.len() as u64,
            modified_us: 0,
            parts: None,
            delta: None,
            page: None,
        };
        let digest = "0".repeat(64);
        let lineage = FileLineage {
            run: "run-1",
            source: "vigilo",
            file: "users-2026-01-15.json",
            digest: &digest,
            as_of_micros: 1,
            now: 2,
        };
        let table = raw_table("vigilo");
        let batch = file_batch(&table, &lineage, &stamp, &parsed, Some(&read)).unwrap();
        let post = batch.column_by_name("post").unwrap();
        let post = post.as_any().downcast_ref::<StringViewArray>().unwrap();
        let values: Vec<&str> = (1..4).map(|i| post.value(i)).collect();
        assert_eq!(values, [first, second, owned]);
        assert!(
            post.value(0).contains("\"bytes\""),
            "the marker comes first"
        );
        // The file's block is the bytes read themselves; only the marker and the decoded
        // record were copied.
        assert_eq!(post.data_buffers()[0].as_ptr(), read.as_ptr());
        let copied: usize = post.data_buffers()[1..].iter().map(|b| b.len()).sum();
        assert!(copied <= post.value(0).len() + owned.len(), "{copied}");
        let kjelde = batch.column_by_name("sha256").unwrap();
        let kjelde = kjelde.as_any().downcast_ref::<StringViewArray>().unwrap();
        assert!((0..4).all(|i| kjelde.value(i) == digest));
        assert_eq!(
            kjelde.data_buffers().iter().map(|b| b.len()).sum::<usize>(),
            64
        );
        // Written as the table's layout, values unchanged.
        let written = crate::delta::conform(&batch, &table.arrow_schema()).unwrap();
        assert_eq!(written.schema(), table.arrow_schema());
        let text = crate::delta::strings(&written, "post").unwrap();
        assert_eq!(text.value(2), second);
        // Without the bytes read (pages pulled from an API), every record is copied.
        let batch = file_batch(&table, &lineage, &stamp, &parsed, None).unwrap();
        let post = crate::delta::strings(&batch, "post").unwrap();
        assert_eq!(post.value(1), first);
    }
}
