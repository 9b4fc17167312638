//! Crash safety and concurrency: runs killed at fixed points and at random moments, and two runs
//! at once, always end — after one more run — with the same tables as one clean run, no
//! duplicate and no lost version.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{count, rows, sample, warehouse};
use crate::scenarios::{ef, elev};
use deltalake::protocol::SaveMode;

fn bergen_run(w: &str) -> Command {
    let mut c = crate::common::elevflyt(&[]);
    c.args([
        "run",
        crate::common::repo()
            .join("pipelines/bergen.toml")
            .to_str()
            .unwrap(),
        "--warehouse",
        w,
    ]);
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// What a clean run gives: history of elev and elevforhold, the county list, the snapshots.
async fn outcome(w: &str) -> Vec<Vec<Vec<String>>> {
    let p = sample("bergen.toml", w);
    assert!(
        elevflyt::ops::check(&p).await.unwrap().is_empty(),
        "invariants hold"
    );
    vec![
        elev(&p).await,
        ef(&p).await,
        rows(
            &p,
            "SELECT skolenummer, klasse, fodselsnummer FROM elevliste_vgs ORDER BY 1, 2, 3",
        )
        .await,
        rows(
            &p,
            "SELECT kildesystem, as_of FROM leveranse GROUP BY 1, 2 ORDER BY 2",
        )
        .await,
        rows(
            &p,
            "SELECT DISTINCT id, fodselsnummer FROM elev_id ORDER BY 1, 2",
        )
        .await,
        rows(
            &p,
            "SELECT kjelde, rad FROM raw_vigilo GROUP BY 1, 2 HAVING count(*) > 1",
        )
        .await,
    ]
}

async fn reference() -> Vec<Vec<Vec<String>>> {
    let dir = tempfile::tempdir().unwrap();
    let w = warehouse(&dir);
    assert!(bergen_run(&w).status().unwrap().success());
    outcome(&w).await
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_at_every_point_the_next_run_finishes_the_work() {
    let expected = reference().await;
    for point in [
        "after-raw",
        "after-avvik",
        "after-stage",
        "after-merge-skole",
        "after-merge-elev",
        "after-merge-elevforhold",
        "after-elev-id",
        "after-leveranse",
        "after-elevliste",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let w = warehouse(&dir);
        let crashed = bergen_run(&w)
            .env("ELEVFLYT_CRASH_AT", point)
            .output()
            .unwrap();
        assert!(
            !crashed.status.success(),
            "{point}: the run should have been aborted"
        );
        assert!(String::from_utf8_lossy(&crashed.stderr).contains(point));
        let p = sample("bergen.toml", &w);
        // Whatever was committed is a valid table version.
        assert!(
            elevflyt::ops::check(&p).await.unwrap().is_empty(),
            "{point}: invariants after the crash"
        );
        let again = bergen_run(&w).output().unwrap();
        assert!(
            again.status.success(),
            "{point}: {}",
            String::from_utf8_lossy(&again.stderr)
        );
        assert_eq!(outcome(&w).await, expected, "after a crash at {point}");
        assert_eq!(
            count(&p, "SELECT count(*) FROM kjoring WHERE status = 'ok'").await,
            1,
            "{point}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_at_random_moments_the_next_run_finishes_the_work() {
    let expected = reference().await;
    // Kill moments spread over a run (a debug-build run of the sample takes about a second).
    for (i, ms) in [60u64, 180, 330, 480, 640, 800, 1000, 1300]
        .iter()
        .enumerate()
    {
        let dir = tempfile::tempdir().unwrap();
        let w = warehouse(&dir);
        let p = sample("bergen.toml", &w);
        // Killed once, and for half of the cases a second time on the retry, at another
        // moment; after each kill, what was committed is consistent (commits go parents
        // first: skole, elev, elevforhold), before any rerun repairs it.
        let kills = if i % 2 == 1 {
            vec![*ms, ms / 2 + 100]
        } else {
            vec![*ms]
        };
        for at in kills {
            let mut child = bergen_run(&w).spawn().unwrap();
            std::thread::sleep(Duration::from_millis(at));
            let _ = child.kill();
            let _ = child.wait();
            let violations = elevflyt::ops::check(&p).await.unwrap();
            assert!(violations.is_empty(), "killed at {at} ms: {violations:?}");
        }
        let again = bergen_run(&w).output().unwrap();
        assert!(
            again.status.success(),
            "killed at {ms} ms: {}",
            String::from_utf8_lossy(&again.stderr)
        );
        assert_eq!(outcome(&w).await, expected, "killed at {ms} ms");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_runs_at_once_never_duplicate_or_lose_a_version() {
    let expected = reference().await;
    for (round, delay) in [0u64, 20, 80, 200, 500].into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let w = warehouse(&dir);
        let a = bergen_run(&w).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let b = bergen_run(&w).spawn().unwrap();
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        assert!(
            a.status.success() || b.status.success(),
            "round {round}: at least one run commits"
        );
        for o in [&a, &b] {
            if !o.status.success() {
                let err = String::from_utf8_lossy(&o.stderr);
                assert_eq!(o.status.code(), Some(1), "round {round}: {err}");
                assert!(
                    err.contains("at the same time")
                        || err.contains("onflict")
                        || err.contains("another"),
                    "round {round}: the message says what happened: {err}"
                );
            }
        }
        let p = sample("bergen.toml", &w);
        assert!(
            elevflyt::ops::check(&p).await.unwrap().is_empty(),
            "round {round}: invariants"
        );
        // One more run finishes whatever the loser left; then the tables equal one clean run.
        assert!(bergen_run(&w).status().unwrap().success());
        let got = outcome(&w).await;
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            let extra: Vec<_> = g.iter().filter(|r| !e.contains(r)).take(5).collect();
            let missing: Vec<_> = e.iter().filter(|r| !g.contains(r)).take(5).collect();
            assert!(
                g == e,
                "round {round}, part {i}: {} vs {} rows; extra {extra:?}; missing {missing:?}",
                g.len(),
                e.len()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_overwrites_at_once_leave_one() {
    use arrow::array::{RecordBatch, StringArray, TimestampMicrosecondArray};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let w = warehouse(&dir);
    let p = sample("bergen.toml", &w);
    let t = &elevflyt::schema::ELEV_ID;
    let batch = |who: &str| {
        let seen = || Arc::new(TimestampMicrosecondArray::from(vec![0i64; 3]).with_timezone("UTC"));
        RecordBatch::try_new(
            t.arrow_schema(),
            vec![
                Arc::new(StringArray::from(vec![who; 3])),
                Arc::new(StringArray::from(vec!["vigilo"; 3])),
                Arc::new(StringArray::from(vec![Some("s"); 3])),
                Arc::new(StringArray::from(vec![None::<&str>; 3])),
                seen(),
                seen(),
            ],
        )
        .unwrap()
    };
    // Two overwrites from the same version (the first round: a table just created, nothing to
    // remove) must not both land: the one committed last replaces the other.
    for round in 0..4 {
        let (a, b) = tokio::join!(
            elevflyt::delta::write(&p, t, vec![batch("a")], SaveMode::Overwrite, "a", "publish"),
            elevflyt::delta::write(&p, t, vec![batch("b")], SaveMode::Overwrite, "b", "publish"),
        );
        a.unwrap();
        b.unwrap();
        let got = rows(&p, "SELECT id, count(*) FROM elev_id GROUP BY id").await;
        assert_eq!(got.len(), 1, "round {round}: {got:?}");
        assert_eq!(got[0][1], "3", "round {round}: {got:?}");
    }
}
