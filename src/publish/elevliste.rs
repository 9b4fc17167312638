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

/// One row of the list: its content and when it was first written as it is.
#[derive(Clone)]
struct Row {
    content: [Option<String>; 6],
    lastet_tid: i64,
}

impl Row {
    fn fylke(&self) -> Option<&str> {
        self.content[0].as_deref()
    }
}

/// The rows of the list in `batches`; `lastet_tid` from the batches when they have it (the
/// stored list), else `now` (a list just made).
fn rows_of(batches: &[RecordBatch], now: i64) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for b in batches {
        let cols: Vec<_> = CONTENT
            .iter()
            .map(|c| crate::delta::text(b, c))
            .collect::<Result<_>>()?;
        let stored = match b.column_by_name("lastet_tid") {
            Some(_) => Some(crate::delta::micros(b, "lastet_tid")?),
            None => None,
        };
        for i in 0..b.num_rows() {
            rows.push(Row {
                content: std::array::from_fn(|c| cols[c].opt(i).map(str::to_string)),
                lastet_tid: stored.as_ref().map_or(now, |l| l.value(i)),
            });
        }
    }
    Ok(rows)
}

/// What a new list changes in the stored one. A row that is in both keeps its `lastet_tid`
/// and is written nowhere else: the Change Data Feed holds only the rows that changed
/// (docs/ARCHITECTURE.md, "Sharing").
struct Diff {
    /// The new list, in its order.
    rows: Vec<Row>,
    inserted: Vec<Row>,
    deleted: Vec<Row>,
}

fn diff(old: Vec<Row>, new: Vec<Row>) -> Diff {
    // The stored rows by content, each content with the `lastet_tid` of its rows: the texts are
    // moved into the map, not copied (a list of 100,000 rows has 600,000 of them).
    let mut stored: std::collections::HashMap<[Option<String>; 6], Vec<i64>> =
        std::collections::HashMap::with_capacity(old.len());
    for r in old {
        stored.entry(r.content).or_default().push(r.lastet_tid);
    }
    let mut rows = Vec::with_capacity(new.len());
    let mut inserted = Vec::new();
    for r in new {
        match stored.get_mut(&r.content).and_then(Vec::pop) {
            Some(lastet_tid) => rows.push(Row {
                content: r.content,
                lastet_tid,
            }),
            None => {
                inserted.push(r.clone());
                rows.push(r);
            }
        }
    }
    let mut deleted: Vec<Row> = stored
        .into_iter()
        .flat_map(|(content, left)| {
            left.into_iter().map(move |lastet_tid| Row {
                content: content.clone(),
                lastet_tid,
            })
        })
        .collect();
    deleted.sort_by(|a, b| a.content.cmp(&b.content));
    Diff {
        rows,
        inserted,
        deleted,
    }
}

/// Rows as a batch of the list, with or without the partition column.
fn batch(rows: &[&Row], with_fylke: bool) -> Result<RecordBatch> {
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
                rows.iter().map(|r| r.content[c].as_deref()),
            )),
            None => ts(rows.iter().map(|r| Some(r.lastet_tid))),
        });
    }
    Ok(RecordBatch::try_new(out, cols)?)
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
    let now = chrono::Utc::now().timestamp_micros();
    let new = rows_of(&crate::delta::query(&session, &sql).await?, now)?;
    let t = &schema::ELEVLISTE_VGS;
    let table = crate::delta::open_or_create(&ctx.pipeline, t).await?;
    let old = if table.version().unwrap_or(0) == 0 {
        Vec::new()
    } else {
        let stored = SessionContext::new();
        crate::delta::register(&stored, t.name, &table).await?;
        rows_of(
            &crate::delta::query(&stored, "SELECT * FROM elevliste_vgs").await?,
            now,
        )?
    };
    // The guard before any commit, the switch of an older list to a Change Data Feed included.
    super::guard::check_county_list(ctx, old.len(), new.len())?;
    let table = with_change_data_feed(table).await?;
    let read_version = table.version().unwrap_or(0);
    let rows = new.len();
    let d = diff(old, new);
    let changed: std::collections::BTreeSet<Option<&str>> = d
        .inserted
        .iter()
        .chain(&d.deleted)
        .map(Row::fylke)
        .collect();
    let mut actions = Vec::new();
    if !changed.is_empty() {
        let kept: Vec<&Row> = d
            .rows
            .iter()
            .filter(|r| changed.contains(&r.fylke()))
            .collect();
        if !kept.is_empty() {
            actions = crate::delta::write_files(&table, t, vec![batch(&kept, true)?]).await?;
        }
        for f in crate::delta::file_views(&table).await? {
            let fylke = f.partition_values_map().remove("fylkesnummer").flatten();
            if changed.contains(&fylke.as_deref()) {
                actions.push(Action::Remove(f.remove_action(true)));
            }
        }
        let cdf_schema = batch(&[], false)?.schema();
        for fylke in &changed {
            let pick = |rows: &[Row]| -> Result<Vec<RecordBatch>> {
                let of: Vec<&Row> = rows.iter().filter(|r| r.fylke() == *fylke).collect();
                Ok(vec![batch(&of, false)?])
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

    /// A row of the list whose content is one text (in `klasse`).
    fn row(text: &str, lastet_tid: i64) -> Row {
        let mut content: [Option<String>; 6] = Default::default();
        content[3] = Some(text.to_string());
        Row {
            content,
            lastet_tid,
        }
    }

    #[test]
    fn a_row_in_both_lists_keeps_its_time_and_only_the_changes_are_written() {
        let old = vec![row("a", 1), row("b", 2), row("b", 3), row("d", 4)];
        let new = vec![row("b", 9), row("c", 9), row("a", 9)];
        let d = diff(old, new);
        let got = |rows: &[Row]| -> Vec<(String, i64)> {
            (rows.iter())
                .map(|r| (r.content[3].clone().unwrap_or_default(), r.lastet_tid))
                .collect()
        };
        // In the new list's order; a kept row has its stored time (of one of its stored copies).
        assert_eq!(
            got(&d.rows),
            [("b".into(), 3), ("c".into(), 9), ("a".into(), 1)]
        );
        assert_eq!(got(&d.inserted), [("c".into(), 9)]);
        // The other copy of "b" and "d" are gone, sorted by content.
        assert_eq!(got(&d.deleted), [("b".into(), 2), ("d".into(), 4)]);
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
