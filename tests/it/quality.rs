//! Deviations as the schools' to-do list, and the operator report.

use crate::common::{count, elevflyt, rows, sample, warehouse};

#[tokio::test(flavor = "multi_thread")]
async fn deviations_a_later_list_fixes_are_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let p = sample("voss.toml", &warehouse(&dir));
    crate::scenarios::load(&p).await;
    // 46520's list of 1 November had four faults; its list of 15 November fixed them all.
    let run = rows(&p, "SELECT run_id FROM kjoring").await[0][0].clone();
    let got = rows(
        &p,
        "SELECT regel, substr(CAST(as_of AS VARCHAR), 1, 10), lost_av FROM avvik ORDER BY rad",
    )
    .await;
    assert_eq!(
        got,
        [
            ["fnr_reparert", "2026-11-01", run.as_str()],
            ["fnr_ugyldig", "2026-11-01", run.as_str()],
            ["fnr_formatert", "2026-11-01", run.as_str()],
            ["duplikat", "2026-11-01", run.as_str()],
        ]
    );
    assert_eq!(
        count(&p, "SELECT count(*) FROM avvik WHERE lost IS NULL").await,
        0
    );

    // Bergen: the bad control digit is in both snapshots, so it is not resolved (the report
    // shows it once, with its newest report).
    let b = sample("bergen.toml", &warehouse(&dir));
    crate::scenarios::load(&b).await;
    let open = rows(&b, "SELECT system_id, substr(CAST(as_of AS VARCHAR), 1, 10) AS t FROM avvik WHERE lost IS NULL ORDER BY t").await;
    assert_eq!(
        open,
        [["V-UGYLDIG", "2026-01-15"], ["V-UGYLDIG", "2026-02-05"]]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_report_answers_the_three_questions_and_says_why_a_run_failed() {
    let dir = tempfile::tempdir().unwrap();
    let w = warehouse(&dir);
    let bergen = crate::common::repo().join("pipelines/bergen.toml");
    let file = bergen.to_str().unwrap();
    assert!(elevflyt(&["run", file, "--warehouse", &w])
        .output()
        .unwrap()
        .status
        .success());
    let out = elevflyt(&["report", file, "--warehouse", &w, "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let per_class = r["elever_per_klasse"].as_array().unwrap();
    assert_eq!(per_class.len(), 30);
    assert_eq!(per_class[0]["skolenummer"], "46550");
    assert_eq!(per_class[0]["klasse"], "10A");
    assert_eq!(per_class[0]["antall"], 11);
    assert_eq!(
        per_class
            .iter()
            .map(|c| c["antall"].as_i64().unwrap())
            .sum::<i64>(),
        299
    );
    assert_eq!(r["ugyldige_fodselsnummer"], 1);
    assert!(r["sist_lastet"].as_str().unwrap().starts_with("20"));
    assert_eq!(r["apne_avvik_per_skole"][0]["antall"], 1);

    // A failing run: the report (text) says why.
    let p = sample("bergen.toml", &w);
    let body = std::fs::read_to_string(&bergen)
        .unwrap()
        .replace("../sample_data", "{repo}/sample_data")
        + "fnr_ugyldig = \"fail\"\n";
    let failing = crate::common::pipeline_file(dir.path(), "bergen-fail.toml", &body);
    // The same warehouse, with a new snapshot so that standardize has something to check.
    let extra = dir.path().join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    for f in std::fs::read_dir(crate::common::repo().join("sample_data/bergen/vigilo")).unwrap() {
        let f = f.unwrap().path();
        let name = f
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace("2026-02-05", "2026-03-05");
        if name.contains("2026-03-05") {
            std::fs::copy(&f, extra.join(name)).unwrap();
        }
    }
    let body = std::fs::read_to_string(&failing).unwrap().replace(
        &format!(
            "{}/sample_data/bergen/vigilo",
            crate::common::repo().display()
        ),
        extra.to_str().unwrap(),
    );
    std::fs::write(&failing, body).unwrap();
    let out = elevflyt(&["run", failing.to_str().unwrap(), "--warehouse", &w])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = elevflyt(&["report", file, "--warehouse", &w])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("Siste køyring: fail"), "{text}");
    assert!(
        text.contains("Kvifor: fail-reglar broten: fnr_ugyldig"),
        "{text}"
    );
    assert!(
        text.contains("Elevar per klasse:") && text.contains("46550        10A"),
        "{text}"
    );
    assert_eq!(
        count(&p, "SELECT count(*) FROM kjoring WHERE status = 'fail'").await,
        1
    );

    // HTML: one file, no network loads, inline SVG charts.
    let html = dir.path().join("r.html");
    assert!(elevflyt(&[
        "report",
        file,
        "--warehouse",
        &w,
        "--format",
        "html",
        "--out",
        html.to_str().unwrap()
    ])
    .output()
    .unwrap()
    .status
    .success());
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!doctype html>") && page.matches("<svg").count() == 4);
    assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("<script"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_share_threshold_per_school_can_fail_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let w = warehouse(&dir);
    let body = std::fs::read_to_string(crate::common::repo().join("pipelines/voss.toml"))
        .unwrap()
        .replace("../sample_data", "{repo}/sample_data");
    // Default 5 %: one bad number among 25 lines at 46520 (4 %) is below it.
    let p = crate::common::pipeline_file(dir.path(), "default.toml", &body);
    let p = elevflyt::config::Pipeline::load(&p, Some(&w)).unwrap();
    crate::scenarios::load(&p).await;
    assert_eq!(
        count(
            &p,
            "SELECT count(*) FROM avvik WHERE regel = 'fnr_ugyldig_andel'"
        )
        .await,
        0
    );
    // 2 % as a fail rule: the run fails and says which school, with the share, not the numbers.
    let dir2 = tempfile::tempdir().unwrap();
    let strict = body + "fnr_ugyldig_andel = { alvorsgrad = \"fail\", terskel = 0.02 }\n";
    let f = crate::common::pipeline_file(dir2.path(), "strict.toml", &strict);
    let out = elevflyt(&["run", f.to_str().unwrap(), "--warehouse", &warehouse(&dir2)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("fnr_ugyldig_andel"));
    let p2 = elevflyt::config::Pipeline::load(&f, Some(&warehouse(&dir2))).unwrap();
    let got = rows(
        &p2,
        "SELECT skolenummer, alvorsgrad, verdi FROM avvik WHERE regel = 'fnr_ugyldig_andel'",
    )
    .await;
    assert_eq!(got, [["46520", "fail", "4.0 %"]]);
    // The table form is only for rules with a threshold, and the share must be 0–1.
    for bad in [
        "duplikat = { alvorsgrad = \"fail\" }",
        "fnr_ugyldig_andel = { terskel = 5 }",
        "fnr_ugyldig_andel = { nivaa = 1 }",
    ] {
        let f = crate::common::pipeline_file(
            dir2.path(),
            "bad.toml",
            &format!("{}{bad}\n", body_without_quality_tail(&strict)),
        );
        let out = elevflyt(&["run", f.to_str().unwrap(), "--warehouse", &warehouse(&dir2)])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
    }
    let rules = String::from_utf8_lossy(&elevflyt(&["rules"]).output().unwrap().stdout).to_string();
    assert!(rules.contains("fnr_ugyldig_andel") && rules.contains("5 %"));
}

fn body_without_quality_tail(s: &str) -> String {
    s.lines()
        .filter(|l| !l.starts_with("fnr_ugyldig_andel"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sudden_drop_in_pupils_is_flagged_or_stops_the_run() {
    use crate::fixtures::{oneroster, p as pupil, pipeline, tenor};
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let all: Vec<_> = (0..10)
        .map(|i| {
            pupil(
                &format!("u{i}"),
                &tenor(300 + i, false),
                "Fall",
                "46591",
                "5A",
            )
        })
        .collect();
    oneroster(&src, "2026-01-10", &all);
    let warn = pipeline(dir.path(), &[("vigilo", "oneroster-json", &src)], "");
    crate::scenarios::load(&warn).await;
    oneroster(&src, "2026-02-10", &all[..5]);
    crate::scenarios::load(&warn).await;
    let got = rows(&warn, "SELECT kolonne, CAST(verdi AS VARCHAR), status FROM kvalitet WHERE regel_eller_metrikk = 'radendring'").await;
    assert_eq!(got, [["10 → 5", "-0.5", "warn"]]);
    assert_eq!(
        count(&warn, "SELECT count(*) FROM elev WHERE is_current").await,
        5
    );
    // Rows and current rows as the last run measured them: those of the table.
    let measured = |m: &'static str| {
        format!(
            "SELECT CAST(verdi AS BIGINT) FROM kvalitet WHERE tabell = 'elev' AND \
             regel_eller_metrikk = '{m}' ORDER BY malt DESC LIMIT 1"
        )
    };
    assert_eq!(
        count(&warn, &measured("rader_gjeldande")).await,
        count(&warn, "SELECT count(*) FROM elev WHERE is_current").await
    );
    assert_eq!(
        count(&warn, &measured("rader_totalt")).await,
        count(&warn, "SELECT count(*) FROM elev").await
    );
    assert!(count(&warn, "SELECT count(*) FROM elev").await > 5);
    // Freshness and key uniqueness are measured too.
    assert_eq!(count(&warn, "SELECT count(*) FROM kvalitet WHERE regel_eller_metrikk = 'unik_nokkel' AND status = 'ok'").await, 6);
    assert!(count(&warn, "SELECT CAST(max(verdi) AS BIGINT) FROM kvalitet WHERE regel_eller_metrikk = 'ferskleik_dagar'").await > 200);

    // As a fail rule the same drop changes no data table.
    let dir2 = tempfile::tempdir().unwrap();
    let src2 = dir2.path().join("src");
    oneroster(&src2, "2026-01-10", &all);
    let strict = pipeline(
        dir2.path(),
        &[("vigilo", "oneroster-json", &src2)],
        "radendring = { alvorsgrad = \"fail\", terskel = 0.3 }",
    );
    crate::scenarios::load(&strict).await;
    let before = crate::common::versions(&strict, &["elev", "elevforhold", "elevliste_vgs"]).await;
    oneroster(&src2, "2026-02-10", &all[..5]);
    let err = elevflyt::run::execute(
        &elevflyt::run::RunContext::new(strict.clone()),
        elevflyt::run::Stage::All,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, elevflyt::Error::RuleFailed(_)) && err.to_string().contains("radendring"),
        "{err}"
    );
    assert_eq!(
        crate::common::versions(&strict, &["elev", "elevforhold", "elevliste_vgs"]).await,
        before
    );
    assert_eq!(
        rows(&strict, "SELECT status FROM kjoring ORDER BY started").await,
        [["ok"], ["fail"]]
    );
}

/// Columns shifted in a hand-edited list put a name where numbers belong: the deviations say
/// which field is wrong, and `avvik.verdi` shows nothing of the name (a number keeps its date
/// part, anything else is masked whole).
#[tokio::test(flavor = "multi_thread")]
async fn a_name_in_a_number_column_is_masked_whole_in_avvik() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("vigo");
    std::fs::create_dir_all(&src).unwrap();
    let text = "kommunenummer;skolenummer;fylkesnummer;klasse;fødselsnummer;elev_namn\r\n\
                4621;46520;46;10A;12911153597;Ingrid Myrvang\r\n\
                Håvard Nordmann;46520;46;10A;Håvard Nordmann;10A\r\n";
    std::fs::write(src.join("elevliste_46520_20261101.csv"), text).unwrap();
    let p = crate::fixtures::pipeline(dir.path(), &[("vigo", "vigo-csv", &src)], "");
    crate::scenarios::load(&p).await;
    let got = rows(
        &p,
        "SELECT regel, felt, coalesce(verdi, '') FROM avvik ORDER BY regel, felt",
    )
    .await;
    let rules: Vec<&str> = got.iter().map(|r| r[0].as_str()).collect();
    assert!(rules.contains(&"fnr_ugyldig"), "{got:?}");
    assert!(rules.contains(&"kommunenummer_ukjent"), "{got:?}");
    for r in &got {
        assert!(
            !r[2].contains("H") && !r[2].contains("Nordmann") && !r[2].contains("vard"),
            "personal data in avvik.verdi: {r:?}"
        );
    }
    let fnr = got.iter().find(|r| r[0] == "fnr_ugyldig").unwrap();
    assert!(fnr[2].chars().all(|c| c == '*'), "{fnr:?}");
    let kommune = got.iter().find(|r| r[0] == "kommunenummer_ukjent").unwrap();
    assert!(kommune[2].chars().all(|c| c == '*'), "{kommune:?}");
}
