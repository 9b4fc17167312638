//! Writes `avvik`: this run's deviations appended, and the open ones that the new snapshots no
//! longer have marked resolved (`lost`, `lost_av`), in one commit. Which ones are resolved is
//! decided by [`crate::quality::avvik::resolve`].

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Int64Builder, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondArray, TimestampMicrosecondBuilder,
};
use deltalake::datafusion::prelude::SessionContext;

use crate::context::RunContext;
use crate::error::Result;
use crate::ledger::SnapshotKey;
use crate::quality::avvik::{resolve, Open};
use crate::quality::Avvik;
use crate::schema;

fn opt(a: &StringArray, i: usize) -> Option<String> {
    (!a.is_null(i)).then(|| a.value(i).to_string())
}

async fn open_deviations(ctx: &RunContext) -> Result<Vec<Open>> {
    let session = crate::delta::session(&ctx.pipeline, &["avvik"]).await?;
    let mut out = Vec::new();
    if !crate::delta::has_table(&session, "avvik") {
        return Ok(out);
    }
    let sql = "SELECT run_id, kjelde, rad, regel, felt, kildesystem, omfang, as_of, skolenummer, system_id, verdi \
               FROM avvik WHERE lost IS NULL AND as_of IS NOT NULL";
    for b in crate::delta::query(&session, sql).await? {
        let s = |n: &str| crate::delta::strings(&b, n);
        let (run, kjelde, regel, felt, k, o, skole, sys, verdi) = (
            s("run_id")?,
            s("kjelde")?,
            s("regel")?,
            s("felt")?,
            s("kildesystem")?,
            s("omfang")?,
            s("skolenummer")?,
            s("system_id")?,
            s("verdi")?,
        );
        let rad = arrow::compute::cast(b.column(2), &arrow::datatypes::DataType::Int64)?;
        let rad = rad
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .cloned();
        let as_of = crate::delta::micros(&b, "as_of")?;
        for i in 0..b.num_rows() {
            out.push(Open {
                run_id: run.value(i).to_string(),
                kjelde: opt(&kjelde, i),
                rad: rad
                    .as_ref()
                    .and_then(|r| (!r.is_null(i)).then(|| r.value(i))),
                regel: regel.value(i).to_string(),
                felt: opt(&felt, i),
                scope: (k.value(i).to_string(), opt(&o, i)),
                as_of: as_of.value(i),
                key: (
                    opt(&skole, i),
                    opt(&sys, i),
                    regel.value(i).to_string(),
                    opt(&felt, i),
                    opt(&verdi, i),
                ),
            });
        }
    }
    Ok(out)
}

/// Writes this run's deviations and resolves the ones the new snapshots no longer have.
pub async fn write(
    ctx: &RunContext,
    avvik: &[Avvik],
    snapshots: &[SnapshotKey],
) -> Result<Option<i64>> {
    let now = ctx.started.timestamp_micros();
    let open = open_deviations(ctx).await?;
    let resolution = resolve(avvik, &open, snapshots);
    let (new_lost, resolved) = (resolution.new_lost, resolution.resolved);

    let t = &schema::AVVIK;
    let batch = new_rows(ctx, avvik, &new_lost, now)?;
    if resolved.is_empty() {
        return crate::delta::append(ctx, t, batch, "standardize").await;
    }
    merge(ctx, batch, &resolved, now).await
}

/// This run's deviations as rows of `avvik`; those a later snapshot of the same run no longer
/// has are resolved already.
fn new_rows(ctx: &RunContext, avvik: &[Avvik], new_lost: &[bool], now: i64) -> Result<RecordBatch> {
    let t = &schema::AVVIK;
    let mut run_id = StringBuilder::new();
    let mut oppdaga = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut kildesystem = StringBuilder::new();
    let mut kjelde = StringBuilder::new();
    let mut rad = Int64Builder::new();
    let mut skolenummer = StringBuilder::new();
    let mut system_id = StringBuilder::new();
    let mut regel = StringBuilder::new();
    let mut alvorsgrad = StringBuilder::new();
    let mut felt = StringBuilder::new();
    let mut verdi = StringBuilder::new();
    let mut melding = StringBuilder::new();
    let mut omfang = StringBuilder::new();
    let mut as_of = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut lost = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut lost_av = StringBuilder::new();
    for (i, a) in avvik.iter().enumerate() {
        run_id.append_value(&ctx.run_id);
        oppdaga.append_value(now);
        kildesystem.append_value(&a.record.kildesystem);
        kjelde.append_value(&a.record.kjelde);
        rad.append_value(a.record.rad);
        skolenummer.append_option(a.record.skolenummer.as_deref());
        system_id.append_option(a.record.system_id.as_deref());
        regel.append_value(a.regel);
        alvorsgrad.append_value(a.alvorsgrad.as_str());
        felt.append_option(a.felt);
        verdi.append_option(a.verdi.as_deref());
        melding.append_value(&a.melding);
        omfang.append_option(a.omfang.as_deref());
        as_of.append_value(a.as_of);
        lost.append_option(new_lost[i].then_some(now));
        lost_av.append_option(new_lost[i].then_some(ctx.run_id.as_str()));
    }
    let batch = t.batch(vec![
        ("run_id", Arc::new(run_id.finish())),
        ("oppdaga", Arc::new(oppdaga.finish())),
        ("kildesystem", Arc::new(kildesystem.finish())),
        ("kjelde", Arc::new(kjelde.finish())),
        ("rad", Arc::new(rad.finish())),
        ("skolenummer", Arc::new(skolenummer.finish())),
        ("system_id", Arc::new(system_id.finish())),
        ("regel", Arc::new(regel.finish())),
        ("alvorsgrad", Arc::new(alvorsgrad.finish())),
        ("felt", Arc::new(felt.finish())),
        ("verdi", Arc::new(verdi.finish())),
        ("melding", Arc::new(melding.finish())),
        ("omfang", Arc::new(omfang.finish())),
        ("as_of", Arc::new(as_of.finish())),
        ("lost", Arc::new(lost.finish())),
        ("lost_av", Arc::new(lost_av.finish())),
    ])?;
    Ok(batch)
}

/// New rows and resolutions in one MERGE: new rows never match (new run id), resolutions match
/// their stored row by (run_id, kjelde, rad, regel, felt).
async fn merge(
    ctx: &RunContext,
    batch: RecordBatch,
    resolved: &[&Open],
    now: i64,
) -> Result<Option<i64>> {
    let t = &schema::AVVIK;
    let n = resolved.len();
    let schema = t.merge_source_schema();
    let mut new_cols: Vec<ArrayRef> = batch.columns().to_vec();
    new_cols.push(Arc::new(StringArray::from(vec![
        "insert";
        batch.num_rows()
    ])));
    let new_rows = RecordBatch::try_new(schema.clone(), new_cols)?;
    let res_cols: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| -> ArrayRef {
            let strings = |v: Vec<Option<String>>| Arc::new(StringArray::from(v)) as ArrayRef;
            match f.name().as_str() {
                "run_id" => strings(resolved.iter().map(|r| Some(r.run_id.clone())).collect()),
                "kjelde" => strings(resolved.iter().map(|r| r.kjelde.clone()).collect()),
                "rad" => Arc::new(arrow::array::Int64Array::from(
                    resolved.iter().map(|r| r.rad).collect::<Vec<_>>(),
                )),
                "regel" => strings(resolved.iter().map(|r| Some(r.regel.clone())).collect()),
                "felt" => strings(resolved.iter().map(|r| r.felt.clone()).collect()),
                "lost" => {
                    Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC"))
                }
                "lost_av" => strings(vec![Some(ctx.run_id.clone()); n]),
                "_op" => strings(vec![Some("resolve".into()); n]),
                _ => arrow::array::new_null_array(f.data_type(), n),
            }
        })
        .collect();
    let res_rows = RecordBatch::try_new(schema.clone(), res_cols)?;
    let source = arrow::compute::concat_batches(&schema, &[new_rows, res_rows])?;
    let table = crate::delta::open_or_create(&ctx.pipeline, t).await?;
    let cols: Vec<&str> = t.columns.iter().map(|c| c.name).collect();
    let (table, _) = table
        .merge(
            SessionContext::new().read_batch(source)?,
            "t.run_id = s.run_id AND coalesce(t.kjelde, '') = coalesce(s.kjelde, '') \
             AND coalesce(t.rad, -1) = coalesce(s.rad, -1) AND t.regel = s.regel \
             AND coalesce(t.felt, '') = coalesce(s.felt, '')",
        )
        .with_source_alias("s")
        .with_target_alias("t")
        .when_matched_update(|u| {
            u.predicate("s._op = 'resolve' AND t.lost IS NULL")
                .update("lost", "s.lost")
                .update("lost_av", "s.lost_av")
        })?
        .when_not_matched_insert(|mut i| {
            i = i.predicate("s._op = 'insert'");
            for c in &cols {
                i = i.set(*c, format!("s.{c}"));
            }
            i
        })?
        .with_commit_properties(crate::delta::commit_props(&ctx.run_id, "standardize"))
        .await?;
    Ok(table.version().map(|v| v as i64))
}
