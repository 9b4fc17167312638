//! `elevliste_vgs`: the county's list of current 10th graders, made from the current rows of
//! `elev`, `elevforhold` and `skole` (the query is `elevliste.sql`) whenever they changed, and
//! committed as the change it is (with a Change Data Feed of the changed rows only).

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::Action;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::DeltaTable;

use super::staged::ts;
use crate::context::RunContext;
use crate::error::{Error, Result};
use crate::schema;

/// The key in each commit of the list that names the versions of `elev`, `elevforhold` and
/// `skole` it was made from.
const MADE_FROM: &str = "elevflyt_made_from";

/// The source tables that exist, opened, by name.
async fn sources(ctx: &RunContext) -> Result<Vec<(&'static str, DeltaTable)>> {
    let mut out = Vec::new();
    for t in schema::SCD2_NAMES {
        if let Some(table) = crate::delta::try_open(&ctx.pipeline.table_url(t)).await? {
            out.push((t, table));
        }
    }
    Ok(out)
}

/// The versions of `sources`, as a list commit records them.
fn versions(sources: &[(&str, DeltaTable)]) -> serde_json::Value {
    let versions = sources.iter().map(|(name, t)| (*name, t.version()));
    serde_json::json!(versions.collect::<std::collections::BTreeMap<_, _>>())
}

/// Whether `elevliste_vgs` is missing or behind the tables it is made of: one of them has
/// changed its data since the versions the list's last commit was made from (an OPTIMIZE or
/// VACUUM of a source, e.g. by `elevflyt maintain`, changes none). A list whose commits do not
/// say (written by an older elevflyt, or its log cleaned up) is compared by commit time.
pub async fn is_stale(ctx: &RunContext) -> Result<bool> {
    let sources = sources(ctx).await?;
    if sources.is_empty() {
        return Ok(false);
    }
    let Some(list) = crate::delta::try_open(&ctx.pipeline.table_url("elevliste_vgs")).await? else {
        return Ok(true);
    };
    // Version 0 is the empty table a killed run created before writing the list.
    if list.version() == Some(0) {
        return Ok(true);
    }
    let Some(made_from) = crate::delta::committed_value(&list, MADE_FROM).await? else {
        let newest_source = sources
            .iter()
            .filter_map(|(_, t)| last_commit_time(t))
            .max();
        return Ok(
            newest_source.is_some_and(|newest| last_commit_time(&list).is_none_or(|t| t < newest))
        );
    };
    if made_from.as_object().map(|m| m.len()) != Some(sources.len()) {
        return Ok(true);
    }
    for (name, table) in &sources {
        let (Some(then), Some(now)) = (made_from[*name].as_u64(), table.version()) else {
            return Ok(true);
        };
        if then != now
            && !crate::delta::data_unchanged_since(&ctx.pipeline.table_url(name), then, now).await?
        {
            return Ok(true);
        }
    }
    Ok(false)
}

fn last_commit_time(t: &deltalake::DeltaTable) -> Option<i64> {
    let v = t.version()?;
    t.snapshot().ok()?.version_timestamp(v)
}

/// Current 10th graders, from the current rows of the three SCD2 tables.
pub const ELEVLISTE_SQL: &str = include_str!("elevliste.sql");

/// The county list without a `skole` table: fylke and kommune from the pupil's rows.
const NO_SKOLE: &str = "LEFT JOIN (SELECT NULL AS skolenummer, NULL AS fylkesnummer, NULL AS kommunenummer) s ON false";

/// The list's columns but `lastet_tid`: what a row of the list says about a pupil.
const CONTENT: [&str; 6] = [
    "fylkesnummer",
    "kommunenummer",
    "skolenummer",
    "klasse",
    "fodselsnummer",
    "elev_namn",
];

/// Where a row of a list is: its batch among [`Lists::parts`] and its index in that batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct At {
    part: u32,
    row: u32,
}

/// A batch of a list: its content columns (in the order of [`CONTENT`]) and, for the stored
/// list, `lastet_tid`.
struct Part {
    text: Vec<crate::delta::TextCol>,
    lastet_tid: Option<arrow::array::TimestampMicrosecondArray>,
}

/// The rows of the stored list and of the new one, read where the query and the reader left
/// them: no row is copied into texts of its own (a list of 100,000 rows has 600,000 of them,
/// and copying, hashing and freeing each took a quarter of a second at a million pupils,
/// docs/PERFORMANCE.md, "thirty-third session").
struct Lists {
    parts: Vec<Part>,
    /// The `lastet_tid` of a row of a list just made.
    now: i64,
}

impl Lists {
    fn new(now: i64) -> Self {
        Lists {
            parts: Vec::new(),
            now,
        }
    }

    /// Adds a list's batches; `lastet_tid` from them when they have it (the stored list), else
    /// `now` (a list just made). Returns where its rows are, in order.
    fn add(&mut self, batches: &[RecordBatch]) -> Result<Vec<At>> {
        let mut rows = Vec::new();
        for b in batches {
            let text: Vec<_> = CONTENT
                .iter()
                .map(|c| crate::delta::text(b, c))
                .collect::<Result<_>>()?;
            let lastet_tid = match b.column_by_name("lastet_tid") {
                Some(_) => Some(crate::delta::micros(b, "lastet_tid")?),
                None => None,
            };
            let part = u32::try_from(self.parts.len()).map_err(|_| too_long())?;
            let n = u32::try_from(b.num_rows()).map_err(|_| too_long())?;
            self.parts.push(Part { text, lastet_tid });
            rows.extend((0..n).map(|row| At { part, row }));
        }
        Ok(rows)
    }

    /// The text of content column `c` (an index into [`CONTENT`]) of a row.
    fn text(&self, at: At, c: usize) -> Option<&str> {
        self.parts[at.part as usize].text[c].opt(at.row as usize)
    }

    fn content(&self, at: At) -> [Option<&str>; 6] {
        std::array::from_fn(|c| self.text(at, c))
    }

    fn fylke(&self, at: At) -> Option<&str> {
        self.text(at, 0)
    }

    fn lastet_tid(&self, at: At) -> i64 {
        let part = &self.parts[at.part as usize];
        part.lastet_tid
            .as_ref()
            .map_or(self.now, |l| l.value(at.row as usize))
    }

    /// A row's content as one hash (xxh3-64), each text with its length and a null apart from
    /// an empty text. Rows with the same hash are compared by their texts before they are
    /// taken as the same ([`diff`]).
    fn hash(&self, at: At, buf: &mut Vec<u8>) -> u64 {
        buf.clear();
        for c in 0..CONTENT.len() {
            match self.text(at, c) {
                None => buf.push(0),
                Some(t) => {
                    buf.push(1);
                    buf.extend_from_slice(&(t.len() as u64).to_le_bytes());
                    buf.extend_from_slice(t.as_bytes());
                }
            }
        }
        xxhash_rust::xxh3::xxh3_64(buf)
    }

    /// Rows as a batch of the list, with or without the partition column.
    fn batch(&self, rows: &[At], with_fylke: bool) -> Result<RecordBatch> {
        let full = schema::ELEVLISTE_VGS.arrow_schema();
        let fields: Vec<_> = full
            .fields()
            .iter()
            .filter(|f| with_fylke || f.name() != "fylkesnummer")
            .cloned()
            .collect();
        let out = Arc::new(arrow::datatypes::Schema::new(fields));
        let mut cols: Vec<ArrayRef> = Vec::new();
        for f in out.fields() {
            cols.push(match CONTENT.iter().position(|c| c == f.name()) {
                Some(c) => Arc::new(arrow::array::StringArray::from_iter(
                    rows.iter().map(|&at| self.text(at, c)),
                )),
                None => ts(rows.iter().map(|&at| Some(self.lastet_tid(at)))),
            });
        }
        Ok(RecordBatch::try_new(out, cols)?)
    }
}

fn too_long() -> Error {
    Error::Internal("elevliste_vgs: more rows or batches than a list can hold".into())
}

/// What a new list changes in the stored one. A row that is in both keeps its `lastet_tid`
/// (it is the stored row) and is written nowhere else: the Change Data Feed holds only the rows
/// that changed (docs/ARCHITECTURE.md, "Sharing").
struct Diff {
    /// The new list, in its order: stored rows where their content is unchanged, new rows else.
    rows: Vec<At>,
    inserted: Vec<At>,
    deleted: Vec<At>,
}

/// Matches each row of `new` with a stored row of the same content: the stored rows' hashes
/// sorted instead of moved into a map, and a stored row with the same hash taken only when its
/// texts are the same too.
fn diff(lists: &Lists, old: &[At], new: &[At]) -> Diff {
    diff_by(lists, old, new, Lists::hash)
}

/// How a row is hashed to find the stored rows to compare it with (not
/// [`super::row_hash::RowHash`], the hash SCD2 stores).
type HashRow = fn(&Lists, At, &mut Vec<u8>) -> u64;

/// [`diff`] with the rows hashed by `hash` (a test gives every row the same hash).
fn diff_by(lists: &Lists, old: &[At], new: &[At], hash: HashRow) -> Diff {
    let mut buf = Vec::with_capacity(256);
    let mut stored: Vec<(u64, u32)> = (old.iter().enumerate())
        .map(|(i, &at)| (hash(lists, at, &mut buf), i as u32))
        .collect();
    stored.sort_unstable();
    let mut taken = vec![false; old.len()];
    let mut rows = Vec::with_capacity(new.len());
    let mut inserted = Vec::new();
    for &at in new {
        let h = hash(lists, at, &mut buf);
        let from = stored.partition_point(|&(sh, _)| sh < h);
        let to = from + stored[from..].partition_point(|&(sh, _)| sh == h);
        // Of equal stored rows, the last one stored first.
        let content = lists.content(at);
        let same = (stored[from..to].iter().rev())
            .map(|&(_, i)| i as usize)
            .find(|&i| !taken[i] && lists.content(old[i]) == content);
        match same {
            Some(i) => {
                taken[i] = true;
                rows.push(old[i]);
            }
            None => {
                inserted.push(at);
                rows.push(at);
            }
        }
    }
    let mut deleted: Vec<At> = (old.iter().zip(&taken))
        .filter(|(_, &t)| !t)
        .map(|(&at, _)| at)
        .collect();
    deleted.sort_by(|&a, &b| lists.content(a).cmp(&lists.content(b)));
    Diff {
        rows,
        inserted,
        deleted,
    }
}

/// The query's joins built on the side the query names first (the current 10th graders' rows
/// of `elevforhold`, a tenth of the pupils), each built once and the other side streamed past
/// it. Without statistics for the filters DataFusion would build on `elev` instead: every
/// current pupil's names and number hashed into tables, split by key across the cores first
/// (docs/PERFORMANCE.md, "twelfth session").
fn joins_as_written(session: &SessionContext) {
    let state = session.state_ref();
    let mut state = state.write();
    let optimizer = &mut state.config_mut().options_mut().optimizer;
    optimizer.join_reordering = false;
    optimizer.repartition_joins = false;
}

/// Writes the list as the change it is, unless the mass-change guard stops it
/// (`guard::check_county_list`): the partitions (fylke) whose rows changed get new files, the
/// others keep theirs, and a Change Data Feed file per changed fylke holds the inserted and
/// deleted rows. A run that changes nothing in the list commits only its claim, so the list is
/// no longer behind its sources and the county sees no change.
pub async fn write(ctx: &RunContext) -> Result<(usize, Option<i64>)> {
    let mut steps = crate::context::Steps::new("elevliste_vgs");
    let sources = sources(ctx).await?;
    let session = crate::delta::session_of(&sources).await?;
    joins_as_written(&session);
    if !crate::delta::has_table(&session, "elev")
        || !crate::delta::has_table(&session, "elevforhold")
    {
        return Ok((0, None));
    }
    let sql = if crate::delta::has_table(&session, "skole") {
        ELEVLISTE_SQL.to_string()
    } else {
        ELEVLISTE_SQL.replace(
            "LEFT JOIN skole s ON s.skolenummer = ef.skolenummer AND s.is_current",
            NO_SKOLE,
        )
    };
    let mut lists = Lists::new(chrono::Utc::now().timestamp_micros());
    let new = lists.add(&crate::delta::query(&session, &sql).await?)?;
    steps.step("made from the tables");
    let t = &schema::ELEVLISTE_VGS;
    let table = crate::delta::open_or_create(&ctx.pipeline, t).await?;
    let old = if table.version().unwrap_or(0) == 0 {
        Vec::new()
    } else {
        let stored = SessionContext::new();
        crate::delta::register(&stored, t.name, &table).await?;
        lists.add(&crate::delta::query(&stored, "SELECT * FROM elevliste_vgs").await?)?
    };
    steps.step("stored list read");
    // The guard before any commit, the switch of an older list to a Change Data Feed included.
    super::guard::check_county_list(ctx, old.len(), new.len())?;
    let table = with_change_data_feed(table).await?;
    let read_version = table.version().unwrap_or(0);
    let rows = new.len();
    let d = diff(&lists, &old, &new);
    let changed: std::collections::BTreeSet<Option<&str>> = (d.inserted.iter())
        .chain(&d.deleted)
        .map(|&at| lists.fylke(at))
        .collect();
    steps.step("compared");
    let mut actions = Vec::new();
    if !changed.is_empty() {
        let kept: Vec<At> = (d.rows.iter().copied())
            .filter(|&at| changed.contains(&lists.fylke(at)))
            .collect();
        if !kept.is_empty() {
            actions = crate::delta::write_files(&table, t, vec![lists.batch(&kept, true)?]).await?;
        }
        for f in crate::delta::file_views(&table).await? {
            let fylke = f.partition_values_map().remove("fylkesnummer").flatten();
            if changed.contains(&fylke.as_deref()) {
                actions.push(Action::Remove(f.remove_action(true)));
            }
        }
        let cdf_schema = lists.batch(&[], false)?.schema();
        for fylke in &changed {
            let pick = |rows: &[At]| -> Result<Vec<RecordBatch>> {
                let of: Vec<At> = (rows.iter().copied())
                    .filter(|&at| lists.fylke(at) == *fylke)
                    .collect();
                Ok(vec![lists.batch(&of, false)?])
            };
            let changes = [
                (pick(&d.inserted)?, "insert"),
                (pick(&d.deleted)?, "delete"),
            ];
            actions.push(
                super::merge_record::change_data_in(
                    &table,
                    &cdf_schema,
                    &changes,
                    Some(("fylkesnummer", *fylke)),
                )
                .await?,
            );
        }
    }
    steps.step("changed files written");
    let metrics = serde_json::json!({
        "numOutputRows": rows.to_string(),
        "numInsertedRows": d.inserted.len().to_string(),
        "numDeletedRows": d.deleted.len().to_string(),
        "numChangedPartitions": changed.len().to_string(),
    });
    let mut metadata = crate::delta::commit_metadata(&ctx.run_id, "publish");
    metadata.push(("operationMetrics".into(), metrics));
    metadata.push((MADE_FROM.into(), versions(&sources)));
    let props = CommitProperties::default()
        .with_metadata(metadata)
        .with_application_transaction(crate::delta::claim(t, read_version));
    let operation = DeltaOperation::Write {
        mode: SaveMode::Overwrite,
        partition_by: Some(vec!["fylkesnummer".into()]),
        predicate: None,
    };
    let done = CommitBuilder::from(props)
        .with_actions(actions)
        .build(Some(table.snapshot()?), table.log_store(), operation)
        .await
        .map_err(|e| match crate::delta::is_conflict(&e) {
            true => Error::ConcurrentRun(t.name.to_string()),
            false => e.into(),
        })?;
    Ok((rows, Some(done.version() as i64)))
}

/// Switches the Change Data Feed on for a list written before it was (an older warehouse).
async fn with_change_data_feed(table: DeltaTable) -> Result<DeltaTable> {
    use deltalake::table::config::TablePropertiesExt;
    let on = table
        .snapshot()?
        .snapshot()
        .table_properties()
        .enable_change_data_feed();
    if on {
        return Ok(table);
    }
    Ok(table
        .set_tbl_properties()
        .with_properties([("delta.enableChangeDataFeed".to_string(), "true".to_string())].into())
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::datafusion::datasource::MemTable;

    /// The three tables with more rows than DataFusion builds a join on in one piece, every
    /// row current, in 10th grade and with a text in each text column.
    fn session() -> SessionContext {
        use arrow::array::{BooleanArray, Int32Array, StringArray};
        use arrow::datatypes::DataType;
        const N: usize = 200_000;
        let s = SessionContext::new();
        for t in [&schema::ELEV, &schema::ELEVFORHOLD, &schema::SKOLE] {
            let fields: Vec<_> = (t.arrow_schema().fields().iter())
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect();
            let columns = (fields.iter())
                .map(|f| -> ArrayRef {
                    match f.data_type() {
                        DataType::Boolean => Arc::new(BooleanArray::from(vec![true; N])),
                        DataType::Int32 => Arc::new(Int32Array::from(vec![10; N])),
                        DataType::Utf8 => {
                            Arc::new(StringArray::from_iter_values((0..N).map(|i| i.to_string())))
                        }
                        other => arrow::array::new_null_array(other, N),
                    }
                })
                .collect();
            let schema = Arc::new(arrow::datatypes::Schema::new(fields));
            let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
            let table = MemTable::try_new(schema, vec![vec![batch]]).unwrap();
            s.register_table(t.name, Arc::new(table)).unwrap();
        }
        s
    }

    async fn plan(s: &SessionContext) -> String {
        let batches = crate::delta::query(s, &format!("EXPLAIN {ELEVLISTE_SQL}"))
            .await
            .unwrap();
        let plan = crate::delta::text(&batches[0], "plan").unwrap();
        (0..batches[0].num_rows())
            .map(|i| plan.value(i).to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A test row of a list: its `klasse`, `elev_namn` and `lastet_tid`.
    type TestRow<'a> = (Option<&'a str>, &'a str, i64);

    /// A batch of a list: each row's `klasse` and `elev_namn` (the other texts null), with
    /// `lastet_tid` when given (a stored list), its texts as string views when `views` (as
    /// DataFusion reads a stored list).
    fn list(rows: &[TestRow], stored: bool, views: bool) -> RecordBatch {
        use arrow::array::{StringArray, StringViewArray};
        let fields: Vec<_> = (schema::ELEVLISTE_VGS.arrow_schema().fields().iter())
            .filter(|f| stored || f.name() != "lastet_tid")
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        let texts = |pick: &dyn Fn(&TestRow) -> Option<String>| -> ArrayRef {
            match views {
                true => Arc::new(StringViewArray::from_iter(rows.iter().map(pick))),
                false => Arc::new(StringArray::from_iter(rows.iter().map(pick))),
            }
        };
        let columns = (fields.iter())
            .map(|f| -> ArrayRef {
                match f.name().as_str() {
                    "klasse" => texts(&|r| r.0.map(str::to_string)),
                    "elev_namn" => texts(&|r| Some(r.1.to_string())),
                    "lastet_tid" => ts(rows.iter().map(|r| Some(r.2))),
                    _ => texts(&|_| None),
                }
            })
            .collect();
        let fields: Vec<_> = (fields.iter())
            .zip(&columns)
            .map(|(f, c): (_, &ArrayRef)| f.clone().with_data_type(c.data_type().clone()))
            .collect();
        RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns).unwrap()
    }

    #[test]
    fn a_row_in_both_lists_keeps_its_time_and_only_the_changes_are_written() {
        let mut lists = Lists::new(9);
        // Stored in two batches, read as string views.
        let old = lists
            .add(&[
                list(&[(Some("a"), "x", 1), (Some("b"), "x", 2)], true, true),
                list(
                    &[
                        (Some("b"), "x", 3),
                        (Some("d"), "x", 4),
                        (Some(""), "x", 5),
                        (Some("e"), "y", 6),
                    ],
                    true,
                    true,
                ),
            ])
            .unwrap();
        // Made now: no class (null) is not an empty class; "e" with another name is not "e".
        let new = lists
            .add(&[list(
                &[
                    (Some("b"), "x", 0),
                    (Some("c"), "x", 0),
                    (None, "x", 0),
                    (Some("a"), "x", 0),
                    (Some("e"), "z", 0),
                ],
                false,
                false,
            )])
            .unwrap();
        let got = |rows: &[At]| -> Vec<(Option<String>, String, i64)> {
            let b = lists.batch(rows, true).unwrap();
            let klasse = crate::delta::text(&b, "klasse").unwrap();
            let namn = crate::delta::text(&b, "elev_namn").unwrap();
            let tid = crate::delta::micros(&b, "lastet_tid").unwrap();
            (0..b.num_rows())
                .map(|i| {
                    let k = klasse.opt(i).map(str::to_string);
                    (k, namn.value(i).to_string(), tid.value(i))
                })
                .collect()
        };
        let r = |k: Option<&str>, n: &str, t: i64| (k.map(str::to_string), n.to_string(), t);
        // Compared by their hashes, and with every row given the same hash: rows are told apart
        // by their texts, not by their hashes alone.
        let hashes: [HashRow; 2] = [Lists::hash, |_, _, _| 0];
        for hash in hashes {
            let d = diff_by(&lists, &old, &new, hash);
            // In the new list's order; a kept row is the stored row (the last stored of its
            // copies).
            assert_eq!(
                got(&d.rows),
                [
                    r(Some("b"), "x", 3),
                    r(Some("c"), "x", 9),
                    r(None, "x", 9),
                    r(Some("a"), "x", 1),
                    r(Some("e"), "z", 9)
                ]
            );
            assert_eq!(
                got(&d.inserted),
                [r(Some("c"), "x", 9), r(None, "x", 9), r(Some("e"), "z", 9)]
            );
            // The other copy of "b", the empty class, "d" and "e" with its old name are gone,
            // sorted by content.
            assert_eq!(
                got(&d.deleted),
                [
                    r(Some(""), "x", 5),
                    r(Some("b"), "x", 2),
                    r(Some("d"), "x", 4),
                    r(Some("e"), "y", 6)
                ]
            );
        }
    }

    #[tokio::test]
    async fn the_pupils_are_joined_to_the_tenth_graders_not_the_other_way() {
        // The pupils' side streams past one table of the 10th graders' rows (the left key of
        // the join is theirs), instead of every pupil being hashed into tables split by key.
        let ours = session();
        joins_as_written(&ours);
        let ours = plan(&ours).await;
        assert!(
            ours.contains("HashJoinExec: mode=CollectLeft, join_type=Inner, on=[(elev_id@"),
            "{ours}"
        );
        assert!(!ours.contains("mode=Partitioned"), "{ours}");
        // What DataFusion chooses by itself for tables this large: split by key.
        let default = plan(&session()).await;
        assert!(default.contains("mode=Partitioned"), "{default}");
    }
}
