//! Bergen's story: two Vigilo OneRoster snapshots three weeks apart (2026-01-15, 2026-02-05).

use crate::common::*;
use elevflyt::run::Stage;

const D1: &str = "2026-01-15T00:00:00Z";
const D2: &str = "2026-02-05T00:00:00Z";

fn row(cols: &[&str]) -> Vec<String> {
    cols.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn history_tells_the_story_and_a_rerun_changes_nothing() {
    let dir = tempdir();
    let p = sample("bergen.toml", &warehouse(&dir));
    let s = run(&p, Stage::All).await.unwrap();
    assert_eq!(s.files_read.len(), 10);
    assert_eq!(s.snapshots_published, 2);

    // elev history of the story pupils: (system_id, etternavn, valid_from, valid_to, is_current)
    let got = rows(&p, "SELECT system_id, etternavn, valid_from, valid_to, is_current \
        FROM elev WHERE system_id IN ('V-NY','V-SLUTTA','V-NAMN','V-DNR','V-FLYTTA','V-UGYLDIG') ORDER BY system_id, valid_from").await;
    let got: Vec<Vec<String>> = got
        .into_iter()
        .map(|mut r| {
            r[2] = iso(&r[2]);
            r[3] = iso(&r[3]);
            r
        })
        .collect();
    let d_name = got.iter().find(|r| r[0] == "V-DNR").unwrap()[1].clone();
    let flytta = got.iter().find(|r| r[0] == "V-FLYTTA").unwrap()[1].clone();
    let ny = got.iter().find(|r| r[0] == "V-NY").unwrap()[1].clone();
    let slutta = got.iter().find(|r| r[0] == "V-SLUTTA").unwrap()[1].clone();
    let namn_old = got.iter().find(|r| r[0] == "V-NAMN").unwrap()[1].clone();
    assert_eq!(
        got,
        vec![
            row(&["V-DNR", &d_name, D1, D2, "false"]),
            row(&["V-DNR", &d_name, D2, "", "true"]),
            row(&["V-FLYTTA", &flytta, D1, "", "true"]),
            row(&["V-NAMN", &namn_old, D1, D2, "false"]),
            row(&["V-NAMN", "Bergslien", D2, "", "true"]),
            row(&["V-NY", &ny, D2, "", "true"]),
            row(&["V-SLUTTA", &slutta, D1, D2, "false"]),
        ],
        "V-UGYLDIG has a bad control digit and is never published"
    );

    // The D-number pupil kept the id while the number changed, and the number was a D-number.
    let dnr = rows(&p, "SELECT DISTINCT id, fodselsnummer FROM elev WHERE system_id = 'V-DNR' ORDER BY fodselsnummer DESC").await;
    assert_eq!(dnr.len(), 2);
    assert_eq!(
        dnr[0][0], dnr[1][0],
        "same id across the D-number → fødselsnummer change"
    );
    assert!(
        dnr[0][1].as_bytes()[0] >= b'4',
        "first version is a D-number"
    );
    assert!(
        dnr[1][1].as_bytes()[0] < b'4',
        "second version is a fødselsnummer"
    );

    // The mover: elevforhold at 46550 closed on D2, a new one at 46551 opened on D2.
    let moves = rows(&p, "SELECT ef.skolenummer, ef.klasse, ef.trinn, ef.valid_from, ef.valid_to \
        FROM elevforhold ef JOIN (SELECT DISTINCT id FROM elev WHERE system_id = 'V-FLYTTA') e ON e.id = ef.elev_id ORDER BY ef.valid_from").await;
    let moves: Vec<Vec<String>> = moves
        .into_iter()
        .map(|mut r| {
            r[3] = iso(&r[3]);
            r[4] = iso(&r[4]);
            r
        })
        .collect();
    assert_eq!(
        moves,
        vec![
            row(&["46550", "7A", "7", D1, D2]),
            row(&["46551", "7A", "7", D2, ""])
        ]
    );

    // The leaver's elevforhold is closed as well; the newcomer's is open in 10A.
    assert_eq!(count(&p, "SELECT count(*) FROM elevforhold ef JOIN (SELECT DISTINCT id FROM elev WHERE system_id = 'V-SLUTTA') e ON e.id = ef.elev_id WHERE ef.valid_to IS NULL").await, 0);
    assert_eq!(rows(&p, "SELECT ef.klasse FROM elevforhold ef JOIN elev e ON e.id = ef.elev_id WHERE e.system_id = 'V-NY' AND ef.is_current").await, vec![row(&["10A"])]);

    // Invariants: one current row per key, is_current = (valid_to IS NULL), no empty interval.
    for (t, k) in [
        ("elev", "id"),
        ("elevforhold", "id"),
        ("skole", "skolenummer"),
    ] {
        assert_eq!(count(&p, &format!("SELECT count(*) FROM (SELECT {k} FROM {t} WHERE is_current GROUP BY {k} HAVING count(*) > 1)")).await, 0, "{t}");
        assert_eq!(count(&p, &format!("SELECT count(*) FROM {t} WHERE is_current <> (valid_to IS NULL) OR valid_to <= valid_from")).await, 0, "{t}");
    }
    assert_eq!(
        count(&p, "SELECT count(*) FROM elev WHERE is_current").await,
        299
    );
    assert_eq!(
        count(&p, "SELECT count(*) FROM skole WHERE is_current").await,
        3
    );
    // The misspelled `identfier` was read: every current pupil has a fødselsnummer and a birth date.
    assert_eq!(count(&p, "SELECT count(*) FROM elev WHERE is_current AND (fodselsnummer IS NULL OR fodselsdato IS NULL)").await, 0);
    assert_eq!(
        count(
            &p,
            "SELECT count(*) FROM skole WHERE is_current AND organisasjonsnummer IS NULL"
        )
        .await,
        0
    );
    // Scheduled classes (Matematikk 10) are not basisgrupper.
    assert_eq!(
        count(
            &p,
            "SELECT count(*) FROM elevforhold WHERE klasse LIKE 'Mat%'"
        )
        .await,
        0
    );

    // The county's list: the current 10th graders.
    let tenth = count(
        &p,
        "SELECT count(*) FROM elevforhold WHERE is_current AND trinn = 10",
    )
    .await;
    assert_eq!(count(&p, "SELECT count(*) FROM elevliste_vgs").await, tenth);
    assert_eq!(count(&p, "SELECT count(*) FROM elevliste_vgs WHERE fylkesnummer <> '46' OR kommunenummer <> '4601'").await, 0);

    // The bad control digit is in avvik, masked, in both snapshots; no other deviations.
    let avvik = rows(
        &p,
        "SELECT regel, alvorsgrad, kjelde, verdi FROM avvik ORDER BY kjelde",
    )
    .await;
    assert_eq!(avvik.len(), 2, "{avvik:?}");
    for a in &avvik {
        assert_eq!((a[0].as_str(), a[1].as_str()), ("fnr_ugyldig", "drop"));
        assert!(
            a[3].ends_with("*****") && a[3].len() == 11,
            "masked: {}",
            a[3]
        );
    }
    // kjoring and kvalitet record the run.
    assert_eq!(
        rows(&p, "SELECT status, steg FROM kjoring").await,
        vec![row(&["ok", "run"])]
    );
    assert!(
        count(
            &p,
            "SELECT count(*) FROM kvalitet WHERE regel_eller_metrikk = 'elevar_per_klasse'"
        )
        .await
            >= 30
    );
    assert_eq!(
        rows(&p, "SELECT kolonne, CAST(verdi AS BIGINT) FROM kvalitet WHERE regel_eller_metrikk = 'elevar_per_skule' ORDER BY 1").await,
        [["46550", "101"], ["46551", "102"], ["46552", "96"]]
    );
    assert_eq!(count(&p, "SELECT CAST(verdi AS BIGINT) FROM kvalitet WHERE regel_eller_metrikk = 'ugyldige_fodselsnummer'").await, 2);

    // A second run over the same files: nothing read, no new version of any data table.
    let tables = [
        "elev",
        "elevforhold",
        "skole",
        "elevliste_vgs",
        "raw_vigilo",
        "avvik",
    ];
    let before = versions(&p, &tables).await;
    let s2 = run(&p, Stage::All).await.unwrap();
    assert_eq!((s2.files_read.len(), s2.files_skipped), (0, 10));
    assert_eq!(versions(&p, &tables).await, before);
    assert_eq!(count(&p, "SELECT count(*) FROM kjoring").await, 2);
}

/// Timestamps as DataFusion prints them → RFC 3339 with Z.
fn iso(s: &str) -> String {
    if s.is_empty() {
        return String::new();
    }
    let t = s.replace(' ', "T");
    let t = t.trim_end_matches("+00:00").trim_end_matches('Z');
    format!("{t}Z")
}

#[tokio::test(flavor = "multi_thread")]
async fn stages_run_one_at_a_time_into_a_memory_warehouse() {
    let p = sample("bergen.toml", "memory:///stages");
    let s = run(&p, Stage::Ingest).await.unwrap();
    assert_eq!(s.files_read.len(), 10);
    assert!(elevflyt::delta::try_open(&p.table_url("elev"))
        .await
        .unwrap()
        .is_none());
    let s = run(&p, Stage::Standardize).await.unwrap();
    assert_eq!(s.snapshots_standardized, 2);
    let s = run(&p, Stage::Publish).await.unwrap();
    assert_eq!(s.snapshots_published, 2);
    assert_eq!(
        count(&p, "SELECT count(*) FROM elev WHERE is_current").await,
        299
    );
    // Publishing again finds nothing new.
    let s = run(&p, Stage::Publish).await.unwrap();
    assert_eq!(s.snapshots_published, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn ids_are_deterministic_when_rebuilt_from_raw() {
    let a = sample("bergen.toml", "memory:///ids-a");
    let b = sample("bergen.toml", "memory:///ids-b");
    run(&a, Stage::All).await.unwrap();
    run(&b, Stage::All).await.unwrap();
    let q = "SELECT id, system_id FROM elev ORDER BY system_id, valid_from";
    assert_eq!(rows(&a, q).await, rows(&b, q).await);
}
