//! Helpers: pipelines in temporary warehouses, running stages, reading tables back.

use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use elevflyt::config::Pipeline;
use elevflyt::run::{execute, RunContext, Stage, Summary};

/// The elevflyt binary, run as a user runs it, with `args` (more may be added).
pub fn elevflyt(args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_elevflyt"));
    c.args(args);
    c
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Writes a pipeline file into `dir` from `body` (paths in it may use {repo}).
pub fn pipeline_file(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body.replace("{repo}", repo().to_str().unwrap())).unwrap();
    path
}

/// A sample pipeline with its warehouse moved to `warehouse`.
pub fn sample(name: &str, warehouse: &str) -> Pipeline {
    Pipeline::load(&repo().join("pipelines").join(name), Some(warehouse)).unwrap()
}

pub async fn run(p: &Pipeline, stage: Stage) -> elevflyt::Result<Summary> {
    execute(&RunContext::new(p.clone()), stage).await
}

pub async fn sql(p: &Pipeline, query: &str) -> Vec<RecordBatch> {
    let session = elevflyt::ops::session_at(p, None, None).await.unwrap();
    elevflyt::delta::query(&session, query).await.unwrap()
}

/// Query result as rows of strings ("" for NULL), for compact assertions.
pub async fn rows(p: &Pipeline, query: &str) -> Vec<Vec<String>> {
    let batches = sql(p, query).await;
    let mut out = Vec::new();
    for b in &batches {
        let cols: Vec<_> = (0..b.num_columns())
            .map(|i| arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8).unwrap())
            .collect();
        for r in 0..b.num_rows() {
            out.push(
                cols.iter()
                    .map(|c| {
                        let s = c
                            .as_any()
                            .downcast_ref::<arrow::array::StringArray>()
                            .unwrap();
                        if arrow::array::Array::is_null(s, r) {
                            String::new()
                        } else {
                            s.value(r).to_string()
                        }
                    })
                    .collect(),
            );
        }
    }
    out
}

pub async fn count(p: &Pipeline, query: &str) -> i64 {
    rows(p, query).await[0][0].parse().unwrap()
}

/// Latest Delta version of every table that exists.
pub async fn versions(p: &Pipeline, tables: &[&str]) -> Vec<(String, Option<u64>)> {
    let mut out = Vec::new();
    for t in tables {
        let v = elevflyt::delta::try_open(&p.table_url(t))
            .await
            .unwrap()
            .and_then(|t| t.version());
        out.push((t.to_string(), v));
    }
    out
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

pub fn warehouse(dir: &tempfile::TempDir) -> String {
    dir.path().join("lake").to_str().unwrap().to_string()
}
