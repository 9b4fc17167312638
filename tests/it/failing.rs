//! A `fail` rule stops the run: no data table changes, but kjoring, kvalitet and avvik explain why.

use crate::common::*;
use elevflyt::run::Stage;

#[tokio::test(flavor = "multi_thread")]
async fn a_fail_rule_changes_no_data_table_but_is_explained() {
    let dir = tempdir();
    // Day 1: only the first Bergen snapshot, with default rules.
    let day1 = r#"
[pipeline]
name = "bergen_fail"
kommunenummer = "4601"
warehouse = "lake"
catalog = "bergen_kommune"
schema = "grunnskole"

[[source]]
name = "vigilo"
format = "oneroster-json"
location = "{repo}/sample_data/bergen/vigilo"
include = ["*-2026-01-15.json"INCLUDE]

[quality]
allow_synthetic_fnr = true
"#;
    let p1 = pipeline_file(dir.path(), "b.toml", &day1.replace("INCLUDE", ""));
    let p1 = elevflyt::config::Pipeline::load(&p1, None).unwrap();
    run(&p1, Stage::All).await.unwrap();
    let data = ["elev", "elevforhold", "skole", "elevliste_vgs"];
    let before = versions(&p1, &data).await;
    let elev_before = count(&p1, "SELECT count(*) FROM elev").await;

    // Day 2: the second snapshot arrives, and invalid fødselsnummer now fail the run.
    let day2 = day1.replace("INCLUDE", r#", "*-2026-02-05.json""#) + "fnr_ugyldig = \"fail\"\n";
    let p2 = pipeline_file(dir.path(), "b.toml", &day2);
    let p2 = elevflyt::config::Pipeline::load(&p2, None).unwrap();
    let err = run(&p2, Stage::All).await.unwrap_err();
    assert!(matches!(err, elevflyt::Error::RuleFailed(_)), "{err}");
    assert_eq!(err.exit_code(), 1);
    assert!(err.to_string().contains("fnr_ugyldig"));

    assert_eq!(versions(&p2, &data).await, before, "no data table changed");
    assert_eq!(count(&p2, "SELECT count(*) FROM elev").await, elev_before);
    let runs = rows(&p2, "SELECT status, melding FROM kjoring ORDER BY started").await;
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1][0], "fail");
    assert!(runs[1][1].contains("fnr_ugyldig"));
    let failed_run =
        rows(&p2, "SELECT run_id FROM kjoring WHERE status = 'fail'").await[0][0].clone();
    assert_eq!(count(&p2, &format!("SELECT count(*) FROM avvik WHERE run_id = '{failed_run}' AND regel = 'fnr_ugyldig' AND alvorsgrad = 'fail'")).await, 1);
    assert_eq!(count(&p2, &format!("SELECT count(*) FROM kvalitet WHERE run_id = '{failed_run}' AND regel_eller_metrikk = 'fnr_ugyldig' AND status = 'fail'")).await, 1);

    // With the rule back to its default the next run publishes the waiting snapshot.
    let p3 = pipeline_file(
        dir.path(),
        "b.toml",
        &day1.replace("INCLUDE", r#", "*-2026-02-05.json""#),
    );
    let p3 = elevflyt::config::Pipeline::load(&p3, None).unwrap();
    let s = run(&p3, Stage::All).await.unwrap();
    assert_eq!(s.snapshots_published, 1);
    assert_eq!(
        count(&p3, "SELECT count(*) FROM elev WHERE system_id = 'V-NY'").await,
        1
    );
}
