//! Voss's story: hand-made Vigo lists per school in Windows-1252. 46520 and 46521 send lists on
//! 2026-11-01; two weeks later only 46520 sends a new one (a pupil left, one arrived, one changed
//! class, and the two bad numbers of the first list were fixed).

use crate::common::*;
use elevflyt::run::Stage;

#[tokio::test(flavor = "multi_thread")]
async fn hand_made_faults_become_deviations_and_schools_are_separate_scopes() {
    let dir = tempdir();
    let p = sample("voss.toml", &warehouse(&dir));
    let s = run(&p, Stage::All).await.unwrap();
    assert_eq!(s.snapshots_published, 3);

    // One deviation per fault of the first list, masked, with file and line.
    let avvik = rows(
        &p,
        "SELECT regel, alvorsgrad, kjelde, rad, felt, verdi FROM avvik ORDER BY rad",
    )
    .await;
    let rules: Vec<(&str, &str, &str)> = avvik
        .iter()
        .map(|a| (a[0].as_str(), a[1].as_str(), a[3].as_str()))
        .collect();
    assert_eq!(
        rules,
        [
            ("fnr_reparert", "warn", "5"),
            ("fnr_ugyldig", "drop", "7"),
            // "099211 82926": read, and the school is told to remove the space.
            ("fnr_formatert", "warn", "10"),
            ("duplikat", "drop", "16")
        ]
    );
    for a in &avvik {
        assert_eq!(a[2], "elevliste_46520_20261101.csv");
        assert!(a[5].contains("*****"), "masked: {}", a[5]);
    }

    // The repaired number (leading zero restored) was published with 11 digits.
    assert_eq!(
        count(
            &p,
            "SELECT count(*) FROM elev WHERE length(fodselsnummer) <> 11"
        )
        .await,
        0
    );
    // Names were split and decoded from Windows-1252.
    assert!(count(&p, "SELECT count(*) FROM elev WHERE fornavn LIKE '%ø%' OR etternavn LIKE '%ø%' OR etternavn LIKE '%å%'").await > 0);
    assert_eq!(
        count(
            &p,
            "SELECT count(*) FROM elev WHERE fornavn IS NULL OR etternavn IS NULL"
        )
        .await,
        0
    );

    // 46520: 24 current pupils (23 of the first list + the fixed one − the leaver + the newcomer);
    // 46521 sent no second list and keeps all 18 open.
    let per_school = rows(&p, "SELECT skolenummer, count(*) FROM elevforhold WHERE is_current GROUP BY skolenummer ORDER BY 1").await;
    assert_eq!(per_school, [["46520", "24"], ["46521", "18"]]);
    let closed = rows(
        &p,
        "SELECT valid_to, count(*) FROM elevforhold WHERE valid_to IS NOT NULL GROUP BY 1",
    )
    .await;
    assert_eq!(closed.len(), 1);
    assert!(closed[0][0].starts_with("2026-11-15"));
    assert_eq!(closed[0][1], "2", "the leaver and the class change");
    // The leaver has no other school, so the pupil is closed too; nobody else is.
    assert_eq!(
        count(&p, "SELECT count(*) FROM elev WHERE valid_to IS NOT NULL").await,
        1
    );
    assert_eq!(
        count(&p, "SELECT count(*) FROM elev WHERE is_current").await,
        42
    );

    // Every Vigo pupil is in trinn 10 and on the county's list, school year from the file date.
    assert_eq!(
        count(
            &p,
            "SELECT count(*) FROM elevforhold WHERE trinn <> 10 OR skolear <> '20262027'"
        )
        .await,
        0
    );
    assert_eq!(count(&p, "SELECT count(*) FROM elevliste_vgs").await, 42);
    assert_eq!(
        count(&p, "SELECT count(DISTINCT fylkesnummer) FROM elevliste_vgs").await,
        1
    );
    // The elevliste_vgs files are partitioned by fylkesnummer.
    let part = std::path::Path::new(&warehouse(&dir))
        .join("voss_herad/grunnskole/elevliste_vgs/fylkesnummer=46");
    assert!(part.is_dir(), "{} missing", part.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_repair_the_lost_zero_is_dropped_and_reported() {
    let dir = tempdir();
    let body = std::fs::read_to_string(repo().join("pipelines/voss.toml"))
        .unwrap()
        .replace("repair_leading_zero = true", "repair_leading_zero = false")
        .replace("../sample_data", "{repo}/sample_data");
    let path = pipeline_file(dir.path(), "voss.toml", &body);
    let p = elevflyt::config::Pipeline::load(&path, Some(&warehouse(&dir))).unwrap();
    run(&p, Stage::All).await.unwrap();
    let r = rows(
        &p,
        "SELECT regel, alvorsgrad, verdi, melding FROM avvik WHERE regel = 'fnr_manglar_null'",
    )
    .await;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0][1], "drop");
    assert_eq!(r[0][2].len(), 10);
    assert!(r[0][3].contains("formatert som tekst"));
}
