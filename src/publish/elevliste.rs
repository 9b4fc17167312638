//! `elevliste_vgs`: the county's list of current 10th graders, rewritten whole from the current
//! rows of `elev`, `elevforhold` and `skole` (the query is `elevliste.sql`) whenever they changed.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use deltalake::protocol::SaveMode;

use super::staged::ts;
use crate::context::RunContext;
use crate::error::Result;
use crate::schema;

/// Whether `elevliste_vgs` is missing or older than the newest commit of the tables it is made of.
pub async fn is_stale(ctx: &RunContext) -> Result<bool> {
    let mut newest_source = None;
    for t in schema::SCD2_NAMES {
        if let Some(table) = crate::delta::try_open(&ctx.pipeline.table_url(t)).await? {
            newest_source = newest_source.max(last_commit_time(&table));
        }
    }
    let Some(newest_source) = newest_source else {
        return Ok(false);
    };
    Ok(
        match crate::delta::try_open(&ctx.pipeline.table_url("elevliste_vgs")).await? {
            None => true,
            // Version 0 is the empty table a killed run created before writing the list.
            Some(list) => {
                list.version() == Some(0)
                    || last_commit_time(&list).is_none_or(|t| t < newest_source)
            }
        },
    )
}

fn last_commit_time(t: &deltalake::DeltaTable) -> Option<i64> {
    let v = t.version()?;
    t.snapshot().ok()?.version_timestamp(v)
}

/// Current 10th graders, from the current rows of the three SCD2 tables.
pub const ELEVLISTE_SQL: &str = include_str!("elevliste.sql");

/// The county list without a `skole` table: fylke and kommune from the pupil's rows.
const NO_SKOLE: &str = "LEFT JOIN (SELECT NULL AS skolenummer, NULL AS fylkesnummer, NULL AS kommunenummer) s ON false";

/// Rows in the county list as it is (0 when there is none yet).
async fn rows_now(ctx: &RunContext) -> Result<usize> {
    let session = crate::delta::session(&ctx.pipeline, &["elevliste_vgs"]).await?;
    super::metrics::row_count(&session, "elevliste_vgs").await
}

/// Rewrites the list, unless the mass-change guard stops it (`guard::check_county_list`).
pub async fn write(ctx: &RunContext) -> Result<(usize, Option<i64>)> {
    let before = rows_now(ctx).await?;
    let session = crate::delta::session(&ctx.pipeline, &schema::SCD2_NAMES).await?;
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
    let batches = crate::delta::query(&session, &sql).await?;
    let now = chrono::Utc::now().timestamp_micros();
    let t = &schema::ELEVLISTE_VGS;
    let schema = t.arrow_schema();
    let mut out = Vec::new();
    for b in &batches {
        let mut cols: Vec<ArrayRef> = Vec::new();
        for f in schema.fields() {
            cols.push(match f.name().as_str() {
                "lastet_tid" => ts((0..b.num_rows()).map(|_| Some(now))),
                name => Arc::new(crate::delta::strings(b, name)?),
            });
        }
        out.push(RecordBatch::try_new(schema.clone(), cols)?);
    }
    let rows = crate::delta::row_count(&out);
    super::guard::check_county_list(ctx, before, rows)?;
    if out.is_empty() {
        out.push(RecordBatch::new_empty(schema.clone()));
    }
    let v = crate::delta::write(
        &ctx.pipeline,
        t,
        out,
        SaveMode::Overwrite,
        &ctx.run_id,
        "publish",
    )
    .await?;
    Ok((rows, v))
}
