//! The country as a fleet: `generate --national` writes one export and one pipeline file per
//! kommune; `elevflyt run` takes them all in one process, or they run as parallel processes
//! against one warehouse, and no pupil is lost either way.

use std::path::Path;

use crate::common::*;

fn users_in(dir: &Path) -> usize {
    let mut n = 0;
    for k in std::fs::read_dir(dir).unwrap().flatten() {
        let path = k.path();
        if !path.is_dir() || path.file_name().unwrap().to_str().unwrap().len() != 4 {
            continue;
        }
        for f in std::fs::read_dir(&path).unwrap().flatten() {
            if f.file_name().to_str().unwrap().starts_with("users-") {
                let v: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(f.path()).unwrap()).unwrap();
                n += v["users"].as_array().unwrap().len();
            }
        }
    }
    n
}

async fn current_pupils(pipelines: &[std::path::PathBuf], warehouse: Option<&str>) -> usize {
    let mut total = 0;
    for p in pipelines {
        let p = elevflyt::config::Pipeline::load(p, warehouse).unwrap();
        total += count(&p, "SELECT count(*) FROM elev WHERE is_current").await as usize;
    }
    total
}

#[tokio::test(flavor = "multi_thread")]
async fn a_national_fleet_runs_in_one_process_or_in_parallel_and_loses_no_pupil() {
    let dir = tempdir();
    let out = dir.path().join("national");
    let o = elevflyt(&[
        "generate",
        "--national",
        "--kommune",
        "4601,0301,1103,5001,1508,3301",
        "--pupils",
        "3000",
        "--seed",
        "7",
        "--out",
        out.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut pipelines: Vec<_> = std::fs::read_dir(out.join("pipelines"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    pipelines.sort();
    assert_eq!(pipelines.len(), 6, "one pipeline per kommune");
    let pupils = users_in(&out);
    assert_eq!(pupils, 3000);

    // One process, every pipeline after the other.
    let mut args = vec!["run".to_string()];
    args.extend(pipelines.iter().map(|p| p.display().to_string()));
    let o = elevflyt(&[]).args(&args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let runs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 6);
    assert!(runs.as_array().unwrap().iter().all(|r| r["status"] == "ok"));
    assert_eq!(current_pupils(&pipelines, None).await, pupils);

    // Parallel processes against one other warehouse: all six at once.
    let lake = dir.path().join("parallel");
    let children: Vec<_> = pipelines
        .iter()
        .map(|p| {
            elevflyt(&[
                "run",
                p.to_str().unwrap(),
                "--warehouse",
                lake.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(current_pupils(&pipelines, lake.to_str()).await, pupils);

    // One broken pipeline among them: the others still run, the exit code says so.
    let broken = pipeline_file(dir.path(), "broken.toml", "[pipeline]\nname = \"x\"\n");
    let mut args = vec!["run".to_string(), broken.display().to_string()];
    args.push(pipelines[0].display().to_string());
    let o = elevflyt(&[]).args(&args).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let runs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(runs[0]["status"], "failed");
    assert_eq!(runs[1]["status"], "ok");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("1 of 2 pipelines failed"), "{err}");
}
