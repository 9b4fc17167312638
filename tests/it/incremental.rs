//! Incremental days equal a full rebuild (issue 18, docs/ARCHITECTURE.md "History (SCD2)"):
//! a generated kommune with churn every day (moves, renames, leavers, newcomers, D-numbers
//! replaced), run one day at a time, gives exactly the tables one run over all the same raw
//! snapshots gives — every version with its dates, the identity map, the county list —
//! whether the current rows come from the state file (also after `elevflyt maintain`) or, when it
//! is damaged or stale, the tables.

use std::path::Path;

use crate::common::*;

const DAYS: usize = 7;

fn pipeline(dir: &Path, src: &Path) -> elevflyt::config::Pipeline {
    let body = format!(
        r#"[pipeline]
name = "inkrementell"
kommunenummer = "4601"
warehouse = "lake"
catalog = "k"
schema = "grunnskole"

[[source]]
name = "vigilo"
format = "oneroster-json"
location = "{}"

[quality]
allow_synthetic_fnr = true
"#,
        src.display()
    );
    let path = pipeline_file(dir, "p.toml", &body);
    elevflyt::config::Pipeline::load(&path, None).unwrap()
}

/// Every version of the three SCD2 tables (all columns but `transaction_time`), the identity map
/// and the county list, as text rows.
async fn tables(p: &elevflyt::config::Pipeline) -> Vec<(&'static str, Vec<Vec<String>>)> {
    let queries = [
        (
            "elev",
            "SELECT id, system_id, kildesystem, fodselsnummer, feidenavn, kommunenummer, fornavn, \
             mellomnavn, etternavn, fodselsdato, kjonn, epostadresse, mobiltelefonnummer, \
             bostedsadresse, postnummer, poststed, valid_from, valid_to, is_current, rad_hash \
             FROM elev ORDER BY id, valid_from",
        ),
        (
            "elevforhold",
            "SELECT id, elev_id, system_id, kildesystem, skolenummer, klasse, trinn, skolear, \
             hovedskole, startdato, sluttdato, valid_from, valid_to, is_current, rad_hash \
             FROM elevforhold ORDER BY id, valid_from",
        ),
        (
            "skole",
            "SELECT skolenummer, organisasjonsnummer, navn, kommunenummer, fylkesnummer, \
             eierform, kildesystem, valid_from, valid_to, is_current, rad_hash \
             FROM skole ORDER BY skolenummer, valid_from",
        ),
        (
            "elev_id",
            "SELECT * FROM elev_id ORDER BY id, kildesystem, system_id, fodselsnummer",
        ),
        (
            "elevliste_vgs",
            "SELECT fylkesnummer, kommunenummer, skolenummer, klasse, fodselsnummer, elev_namn \
             FROM elevliste_vgs ORDER BY 1, 2, 3, 4, 5",
        ),
        (
            "avvik",
            "SELECT kildesystem, kjelde, rad, skolenummer, system_id, regel, alvorsgrad, felt, \
             verdi, melding, omfang, as_of FROM avvik ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12",
        ),
    ];
    let mut out = Vec::new();
    for (name, q) in queries {
        out.push((name, rows(p, q).await));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn incremental_days_equal_a_full_rebuild_from_the_same_snapshots() {
    let dir = tempdir();
    let generated = dir.path().join("generated");
    let o = elevflyt(&[
        "generate",
        "--pupils",
        "1200",
        "--snapshots",
        &DAYS.to_string(),
        "--churn",
        "0.05",
        "--seed",
        "18",
        "--out",
        generated.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut files: Vec<_> = std::fs::read_dir(&generated)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    // `users-2026-01-15.json`: the date is the name's last ten characters.
    let mut dates: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let stem = f.file_stem()?.to_str()?;
            stem.get(stem.len().checked_sub(10)?..).map(str::to_string)
        })
        .collect();
    dates.sort();
    dates.dedup();
    assert_eq!(dates.len(), DAYS, "one snapshot per day: {dates:?}");
    // Day three loses a pupil whose enrollment stays, unchanged: carried unread it would point
    // to no pupil, so that day is read the full way (docs/ARCHITECTURE.md, "Carried records").
    // Day six renames a class: every enrollment is read again, as they are read against it
    // (the pupils are read from their own records only, and still carried).
    let file_of = |kind: &str, day: usize| {
        let f = generated.join(format!("{kind}-{}.json", dates[day]));
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        (f, v)
    };
    let (f, mut users) = file_of("users", 2);
    let gone = users["users"].as_array_mut().unwrap().remove(0);
    std::fs::write(&f, users.to_string()).unwrap();
    let gone = gone["sourcedId"].as_str().unwrap().to_string();
    let (_, enrollments) = file_of("enrollments", 2);
    assert!(
        enrollments["enrollments"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["user"]["sourcedId"] == gone.as_str()),
        "the pupil's enrollment stays"
    );
    let (f, mut classes) = file_of("classes", 5);
    classes["classes"][0]["title"] = serde_json::Value::from("1A (ny)");
    std::fs::write(&f, classes.to_string()).unwrap();
    // A second record of a pupil carried unread (another system id, the same fødselsnummer):
    // on day six after it, a duplicate read beside the carried pupil, which stays carried; on
    // day seven before it, so that the carried pupil is the duplicate and the day is read the
    // full way. Either way the deviations are a full read's.
    let twin = |users: &serde_json::Value| {
        let mut u = (users["users"].as_array().unwrap().iter())
            .find(|u| {
                u["role"] == "student" && u["identifier"].as_str().is_some_and(|f| f.len() == 11)
            })
            .expect("a pupil with a fødselsnummer")
            .clone();
        u["sourcedId"] = serde_json::Value::from("twin-of-a-carried-pupil");
        u
    };
    for (day, front) in [(5, false), (6, true)] {
        // Put into the text as it is: written anew (members in another order) every record
        // would be changed, and none carried.
        let (f, users) = file_of("users", day);
        let u = twin(&users).to_string();
        let mut text = std::fs::read_to_string(&f).unwrap();
        match front {
            true => {
                let at = text.find('[').unwrap() + 1;
                text.insert_str(at, &format!("{u},"));
            }
            false => {
                let at = text.rfind(']').unwrap();
                text.insert_str(at, &format!(",{u}"));
            }
        }
        std::fs::write(&f, text).unwrap();
    }
    // Pupils and enrollments in exports of 1 MiB or more (white space after the JSON): read
    // mapped, their pages given back once hashed, and a day's changed records read again from
    // the files (docs/ARCHITECTURE.md, "Reading local files").
    for f in files.iter().filter(|f| {
        let name = f.file_name().unwrap().to_str().unwrap();
        name.starts_with("users-") || name.starts_with("enrollments-")
    }) {
        let mut text = std::fs::read(f).unwrap();
        text.resize(text.len().max(1 << 20), b' ');
        std::fs::write(f, text).unwrap();
    }

    // One run a day, each day's files arriving in the morning.
    let daily_dir = dir.path().join("daily");
    let daily_src = daily_dir.join("src");
    std::fs::create_dir_all(&daily_src).unwrap();
    let daily = pipeline(&daily_dir, &daily_src);
    let mut versions_per_day = Vec::new();
    let mut days_from_a_change = 0;
    for date in &dates {
        for f in files
            .iter()
            .filter(|f| f.to_str().unwrap().contains(date.as_str()))
        {
            std::fs::copy(f, daily_src.join(f.file_name().unwrap())).unwrap();
        }
        // Day four finds its state file damaged, day five one of other versions: both read
        // the tables instead, and the result must not differ.
        let state = daily_dir.join("lake/k/grunnskole/_elevflyt/current.state");
        let expected = match versions_per_day.len() {
            0 => "tables (no state file)",
            3 => {
                let mut b = std::fs::read(&state).unwrap();
                let mid = b.len() / 2;
                b[mid] ^= 0x55;
                std::fs::write(&state, b).unwrap();
                "tables (the state file is damaged (checksum))"
            }
            4 => {
                std::fs::copy(dir.path().join("day2.state"), &state).unwrap();
                "tables (the state file is of other table versions)"
            }
            // Day six comes after `elevflyt maintain`: its compaction and vacuum are new
            // versions that change no data, and the state file still serves.
            5 => {
                let before = versions(&daily, &["elev", "elevforhold"]).await;
                let done = elevflyt::ops::maintain(&daily, chrono::Duration::hours(0))
                    .await
                    .unwrap();
                let compacted = |t: &str| done.iter().find(|m| m.table == t).unwrap();
                assert!(compacted("elev").files_compacted > 1, "{done:?}");
                assert!(compacted("elevforhold").files_compacted > 1, "{done:?}");
                let after = versions(&daily, &["elev", "elevforhold"]).await;
                assert!(
                    (before.iter().zip(&after)).all(|(b, a)| a.1 > b.1),
                    "maintain made new versions: {before:?} -> {after:?}"
                );
                "state file"
            }
            _ => "state file",
        };
        // A day read from a state file whose change since its base was beside it.
        let change = state.with_file_name("current.change");
        let with_change = change.exists();
        let s = run(&daily, elevflyt::run::Stage::All).await.unwrap();
        assert_eq!(s.current_rows_from, expected, "day {date}");
        if with_change && expected == "state file" {
            days_from_a_change += 1;
        }
        // Pupils and enrollments carried unread: against the summaries of the day before,
        // unless that day is read the full way (a carried record drawn into a deviation); after
        // a class is renamed, the pupils only.
        let day = versions_per_day.len();
        match (expected, day) {
            ("state file", 2 | 6) => assert_eq!(s.records_carried, 0, "day {date}"),
            ("state file", 5) => assert!(
                (1000..1300).contains(&s.records_carried),
                "day {date}: the pupils carried unread, not their enrollments: {}",
                s.records_carried
            ),
            ("state file", _) => assert!(
                s.records_carried > 2000,
                "day {date}: most of the 1,200 pupils and enrollments carried unread: {}",
                s.records_carried
            ),
            _ => assert_eq!(s.records_carried, 0, "day {date}: nothing to carry against"),
        }
        // Against a usable state file the unchanged pupils and elevforhold are carried
        // forward, not staged again (docs/ARCHITECTURE.md, "Carried rows"); else none are.
        match expected {
            "state file" => assert!(
                s.carried > 1500,
                "day {date}: most of the 1,200 pupils and their elevforhold carried: {}",
                s.carried
            ),
            _ => assert_eq!(s.carried, 0, "day {date}: nothing to carry against"),
        }
        if versions_per_day.len() == 1 {
            std::fs::copy(&state, dir.path().join("day2.state")).unwrap();
        }
        versions_per_day.push(versions(&daily, &["elev", "elevforhold"]).await);
        assert_eq!(
            s.snapshots_published, 1,
            "day {date}: one new snapshot published"
        );
    }
    // A day wrote its state as a change beside the base (docs/ARCHITECTURE.md, "The current
    // state"), and the next day read both: the tables below are still a full rebuild's. (At this
    // test's 5 % churn a day, the change outgrows one in eight of the base by the second day,
    // and the state is written whole again.)
    assert!(
        days_from_a_change >= 1,
        "days read from a base and its change: {days_from_a_change}"
    );
    // Each day changed something (5 % churn), so each made a version of elev.
    let elev_versions: Vec<_> = versions_per_day.iter().map(|v| v[0].1).collect();
    assert!(
        elev_versions.windows(2).all(|w| w[1] > w[0]),
        "a version of elev per day: {elev_versions:?}"
    );

    // The same raw snapshots, all at once: the history rebuilt in one run.
    let all_dir = dir.path().join("all");
    let all_src = all_dir.join("src");
    std::fs::create_dir_all(&all_src).unwrap();
    for f in &files {
        std::fs::copy(f, all_src.join(f.file_name().unwrap())).unwrap();
    }
    let all = pipeline(&all_dir, &all_src);
    let s = run(&all, elevflyt::run::Stage::All).await.unwrap();
    assert_eq!(s.snapshots_published, DAYS);

    let (a, b) = (tables(&daily).await, tables(&all).await);
    for ((name, daily_rows), (_, all_rows)) in a.iter().zip(&b) {
        assert!(!daily_rows.is_empty(), "{name} is empty");
        assert_eq!(
            daily_rows.len(),
            all_rows.len(),
            "{name}: {} rows after {DAYS} daily runs, {} after one run over all",
            daily_rows.len(),
            all_rows.len()
        );
        // Named by position only: the rows hold (synthetic) personal data.
        if let Some(i) = (0..daily_rows.len()).find(|&i| daily_rows[i] != all_rows[i]) {
            panic!(
                "{name}, row {i} of {}: the daily runs differ from the rebuild",
                daily_rows.len()
            );
        }
    }
    // History really moved: versions closed on later days, and some pupils left.
    let closed = count(
        &daily,
        "SELECT count(*) FROM elev WHERE valid_to IS NOT NULL",
    )
    .await;
    let days_with_closes = count(
        &daily,
        "SELECT count(DISTINCT valid_to) FROM elevforhold WHERE valid_to IS NOT NULL",
    )
    .await;
    assert!(closed > 0, "no elev version was closed");
    // The enrollment left without its pupil on day three was reported, as a full read reports it.
    let unknown = count(
        &daily,
        "SELECT count(*) FROM avvik WHERE regel = 'ukjent_elev'",
    )
    .await;
    assert_eq!(unknown, 1, "the enrollment of the pupil gone on day three");
    // The twins of days six and seven were reported as duplicates (the rows above are a full
    // read's).
    let twins = count(
        &daily,
        "SELECT count(DISTINCT as_of) FROM avvik WHERE regel LIKE '%dupl%'",
    )
    .await;
    assert!(
        twins >= 2,
        "duplicates reported on days six and seven: {twins}"
    );
    assert_eq!(
        days_with_closes as usize,
        DAYS - 1,
        "closes on every later day"
    );

    // Each day's file markers were written in a file of their own, apart from the records, so
    // that the queries for them skip the files of records by their statistics
    // (docs/ARCHITECTURE.md, "Stages and the data between them").
    let log = daily_dir.join("lake/k/grunnskole/raw_vigilo/_delta_log");
    let (mut marker_files, mut mixed) = (0, 0);
    let mut live_markers = std::collections::BTreeSet::new();
    let mut commits: Vec<_> = (std::fs::read_dir(&log).unwrap())
        .map(|f| f.unwrap().path())
        .filter(|f| f.extension().is_some_and(|e| e == "json"))
        .collect();
    commits.sort();
    for f in commits {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let action: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(path) = action["remove"]["path"].as_str() {
                live_markers.remove(path);
            }
            let Some(stats) = action["add"]["stats"].as_str() else {
                continue;
            };
            let stats: serde_json::Value = serde_json::from_str(stats).unwrap();
            let (min, max) = (
                &stats["minValues"]["entitet"],
                &stats["maxValues"]["entitet"],
            );
            match (min.as_str(), max.as_str()) {
                (Some("_fil"), Some("_fil")) => {
                    marker_files += 1;
                    live_markers.insert(action["add"]["path"].as_str().unwrap().to_string());
                }
                (Some("_fil"), _) | (_, Some("_fil")) => mixed += 1,
                _ => {}
            }
        }
    }
    // Maintain before day six compacted the first five days' markers into one file, kept
    // apart from the records as well.
    assert_eq!(
        marker_files,
        DAYS + 1,
        "one file of markers added per day's ingest, and one by maintain"
    );
    assert_eq!(
        live_markers.len(),
        DAYS - 5 + 1,
        "the first five days' markers in one file: {live_markers:?}"
    );
    assert_eq!(mixed, 0, "no file holds both markers and records");

    // The same day again changes nothing.
    let before = versions(&daily, &["elev", "elevforhold", "skole", "elev_id"]).await;
    run(&daily, elevflyt::run::Stage::All).await.unwrap();
    assert_eq!(
        versions(&daily, &["elev", "elevforhold", "skole", "elev_id"]).await,
        before
    );
    assert!(elevflyt::ops::check(&daily).await.unwrap().is_empty());
}
