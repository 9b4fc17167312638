//! Operating the tables: time travel, history, Change Data Feed, check, maintain.

use crate::common::{count, elevflyt, rows};
use crate::fixtures::{oneroster, p, pipeline, tenor};
use crate::scenarios::{elev, load};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn time_travel_history_changes_check_and_maintain() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let pl = pipeline(dir.path(), &[("vigilo", "oneroster-json", &src)], "");
    let file = pl.path.to_str().unwrap().to_string();
    let (a, b) = (tenor(50, false), tenor(51, false));
    oneroster(
        &src,
        "2026-01-10",
        &[
            p("a", &a, "Før", "46591", "5A"),
            p("b", &b, "Blir", "46591", "5A"),
        ],
    );
    load(&pl).await;
    oneroster(&src, "2026-02-10", &[p("a", &a, "Etter", "46591", "5A")]);
    load(&pl).await;

    // Transaction time: version 1 of elev is the first load; valid time: the list on a date.
    let v1 = elevflyt(&[
        "sql",
        &file,
        "SELECT etternavn FROM elev ORDER BY etternavn",
        "--version",
        "1",
        "--format",
        "csv",
    ])
    .output()
    .unwrap();
    assert_eq!(stdout(&v1), "etternavn\nBlir\nFør\n");
    let on_date = "SELECT etternavn FROM elev WHERE valid_from <= TIMESTAMP '2026-01-20T00:00:00Z' \
                   AND (valid_to IS NULL OR valid_to > TIMESTAMP '2026-01-20T00:00:00Z') ORDER BY etternavn";
    assert_eq!(
        stdout(
            &elevflyt(&["sql", &file, on_date, "--format", "csv"])
                .output()
                .unwrap()
        ),
        "etternavn\nBlir\nFør\n"
    );
    let before = elevflyt(&[
        "sql",
        &file,
        "SELECT 1 FROM elev",
        "--timestamp",
        "2001-01-01",
    ])
    .output()
    .unwrap();
    assert_eq!(
        before.status.code(),
        Some(2),
        "elev did not exist in 2001: the query names no table (bad usage)"
    );

    // History: versions with the run ids recorded in kjoring.
    let h = elevflyt(&["history", &file, "elev", "--format", "json"])
        .output()
        .unwrap();
    let h: serde_json::Value = serde_json::from_slice(&h.stdout).unwrap();
    let ops: Vec<(i64, &str)> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["version"].as_i64().unwrap(),
                r["operation"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(ops, [(2, "MERGE"), (1, "WRITE"), (0, "CREATE TABLE")]);
    let runs = rows(&pl, "SELECT run_id FROM kjoring ORDER BY started").await;
    assert_eq!(h[0]["run_id"].as_str().unwrap(), runs[1][0]);
    assert!(h[0]["operation_metrics"]
        .as_str()
        .unwrap()
        .contains("num_target_rows_inserted"));

    // Change Data Feed of version 2: a's name change (close + new version), b's leaving.
    let c = elevflyt(&["changes", &file, "elev", "--from", "2", "--format", "json"])
        .output()
        .unwrap();
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    let c: serde_json::Value = serde_json::from_slice(&c.stdout).unwrap();
    let mut kinds: Vec<(String, String)> = c
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["etternavn"].as_str().unwrap().to_string(),
                r["_change_type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("Blir".into(), "update_postimage".into()),
            ("Blir".into(), "update_preimage".into()),
            ("Etter".into(), "insert".into()),
            ("Før".into(), "update_postimage".into()),
            ("Før".into(), "update_preimage".into()),
        ]
    );

    // check passes; a duplicate current row breaks it, naming the key.
    let ok = elevflyt(&["check", &file]).output().unwrap();
    assert!(ok.status.success(), "{}", stdout(&ok));
    // maintain: compacts, checkpoints, and the data stays the same.
    let history_before = elev(&pl).await;
    for date in ["2026-03-10", "2026-04-10"] {
        oneroster(&src, date, &[p("a", &a, date, "46591", "5A")]);
        load(&pl).await;
    }
    let expected = elev(&pl).await;
    assert_eq!(expected.len(), history_before.len() + 2);
    let m = elevflyt(&["maintain", &file, "--retention-hours", "0", "--force"])
        .output()
        .unwrap();
    assert!(m.status.success(), "{}", String::from_utf8_lossy(&m.stderr));
    let m: serde_json::Value = serde_json::from_slice(&m.stdout).unwrap();
    let of = |name: &str| {
        m.as_array()
            .unwrap()
            .iter()
            .find(|t| t["table"] == name)
            .unwrap()
            .clone()
    };
    // kvalitet got one small file per run: compacted into one. MERGE rewrote elev's files: the
    // old ones are vacuumed.
    assert_eq!(of("kvalitet")["files_compacted"], 4, "{}", of("kvalitet"));
    assert_eq!(of("kvalitet")["files_written"], 1);
    assert!(
        of("elev")["files_vacuumed"].as_u64().unwrap() >= 2,
        "{}",
        of("elev")
    );
    assert_eq!(
        count(&pl, "SELECT count(DISTINCT run_id) FROM kvalitet").await,
        4
    );
    let log = dir.path().join("lake/c/s/elev/_delta_log");
    assert!(std::fs::read_dir(&log).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("checkpoint")));
    assert_eq!(elev(&pl).await, expected);
    assert_eq!(
        elevflyt(&["maintain", &file, "--retention-hours", "1"])
            .output()
            .unwrap()
            .status
            .code(),
        Some(2)
    );

    // Break an invariant behind elevflyt's back: check names the key.
    let t = elevflyt::delta::try_open(&pl.table_url("elev"))
        .await
        .unwrap()
        .unwrap();
    let current = elevflyt::delta::query(
        &{
            let ctx = deltalake::datafusion::prelude::SessionContext::new();
            elevflyt::delta::register(&ctx, "elev", &t).await.unwrap();
            ctx
        },
        "SELECT * FROM elev WHERE is_current AND system_id = 'a'",
    )
    .await
    .unwrap();
    let mut dup =
        elevflyt::delta::conform(&current[0], &elevflyt::schema::ELEV.arrow_schema()).unwrap();
    let vf =
        arrow::array::TimestampMicrosecondArray::from(vec![1_000_000_i64]).with_timezone("UTC");
    let idx = dup.schema().index_of("valid_from").unwrap();
    let mut cols = dup.columns().to_vec();
    cols[idx] = std::sync::Arc::new(vf);
    dup = arrow::array::RecordBatch::try_new(dup.schema(), cols).unwrap();
    t.write(vec![dup]).await.unwrap();
    let bad = elevflyt(&["check", &file]).output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let id = rows(&pl, "SELECT DISTINCT id FROM elev WHERE system_id = 'a'").await[0][0].clone();
    assert!(
        stdout(&bad).contains(&format!(
            "at most one current row per key broken for key {id}"
        )),
        "{}",
        stdout(&bad)
    );
    assert!(stdout(&bad).contains("intervals do not overlap"));
    assert_eq!(
        count(
            &pl,
            "SELECT count(*) FROM elev WHERE is_current AND system_id = 'a'"
        )
        .await,
        2
    );
}

/// The live files of a table by the kind of rows their statistics say they hold: (first kind
/// only, second only, both). Raw: file markers, records; SCD2: current rows, closed versions.
async fn files_by_kind(pl: &elevflyt::config::Pipeline, table: &str) -> (usize, usize, usize) {
    let t = elevflyt::delta::try_open(&pl.table_url(table))
        .await
        .unwrap()
        .unwrap();
    let mut kinds = (0, 0, 0);
    for f in elevflyt::delta::file_views(&t).await.unwrap() {
        let stats: serde_json::Value = serde_json::from_str(&f.stats().unwrap()).unwrap();
        let (first, second) = match table {
            "raw_vigilo" => {
                let bound = |which: &str| stats[which]["entitet"].as_str().unwrap().to_string();
                (bound("minValues") == "_fil", bound("maxValues") != "_fil")
            }
            _ => {
                let open = stats["nullCount"]["valid_to"].as_i64().unwrap();
                (open > 0, open < stats["numRecords"].as_i64().unwrap())
            }
        };
        match (first, second) {
            (true, false) => kinds.0 += 1,
            (false, true) => kinds.1 += 1,
            _ => kinds.2 += 1,
        }
    }
    kinds
}

/// maintain compacts a table the way it is laid out: a raw table's markers into one file apart
/// from the records (the queries for them skip the files of records), an SCD2 table's closed
/// versions apart from its current rows (a run rewrites the current rows' files only;
/// docs/ARCHITECTURE.md "Stages and the data between them", "Commit strategies"). A file that
/// mixes them — as a plain OPTIMIZE leaves it — is split. The rows stay the same, the next run
/// carries on from them, and still from its state file.
#[tokio::test(flavor = "multi_thread")]
async fn maintain_keeps_markers_and_current_rows_apart_and_splits_a_file_that_mixes_them() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let pl = pipeline(dir.path(), &[("vigilo", "oneroster-json", &src)], "");
    let file = pl.path.to_str().unwrap().to_string();
    let (a, b) = (tenor(60, false), tenor(61, true));
    for (date, name) in [
        ("2026-01-10", "En"),
        ("2026-01-11", "To"),
        ("2026-01-12", "Tre"),
    ] {
        oneroster(
            &src,
            date,
            &[
                p("a", &a, name, "46591", "5A"),
                p("b", &b, "Fast", "46591", "5A"),
            ],
        );
        load(&pl).await;
    }
    // Three ingests: three files of markers, three of records. Two renames: a file of current
    // rows and two of closed versions.
    assert_eq!(files_by_kind(&pl, "raw_vigilo").await, (3, 3, 0));
    assert_eq!(files_by_kind(&pl, "elev").await, (1, 2, 0));
    let raw = "SELECT entitet, kjelde, rad, post FROM raw_vigilo ORDER BY kjelde, rad";
    let stored = rows(&pl, raw).await;
    let history = elev(&pl).await;
    let maintain = |file: &str| {
        let m = elevflyt(&["maintain", file, "--retention-hours", "0", "--force"])
            .output()
            .unwrap();
        assert!(m.status.success(), "{}", String::from_utf8_lossy(&m.stderr));
        let m: serde_json::Value = serde_json::from_slice(&m.stdout).unwrap();
        let of = |table: &str| {
            let t = m.as_array().unwrap().iter().find(|t| t["table"] == table);
            let t = t.unwrap();
            (
                t["files_compacted"].as_u64().unwrap(),
                t["files_written"].as_u64().unwrap(),
            )
        };
        (of("raw_vigilo"), of("elev"))
    };
    assert_eq!(
        maintain(&file),
        ((3, 1), (2, 1)),
        "the markers into one file, the closed versions into one"
    );
    assert_eq!(files_by_kind(&pl, "raw_vigilo").await, (1, 3, 0));
    assert_eq!(files_by_kind(&pl, "elev").await, (1, 1, 0));
    assert_eq!(rows(&pl, raw).await, stored);
    assert_eq!(elev(&pl).await, history);
    assert_eq!(maintain(&file), ((0, 0), (0, 0)), "nothing left to compact");

    // A plain OPTIMIZE bin-packs them together.
    for table in ["raw_vigilo", "elev"] {
        let t = elevflyt::delta::try_open(&pl.table_url(table))
            .await
            .unwrap()
            .unwrap();
        t.optimize().await.unwrap();
        assert_eq!(files_by_kind(&pl, table).await, (0, 0, 1), "{table}");
    }
    assert_eq!(maintain(&file), ((1, 2), (1, 2)), "each split in two");
    assert_eq!(files_by_kind(&pl, "raw_vigilo").await, (1, 1, 0));
    assert_eq!(files_by_kind(&pl, "elev").await, (1, 1, 0));
    assert_eq!(rows(&pl, raw).await, stored);
    assert_eq!(elev(&pl).await, history);

    // The next day finds the files it has, reads the new one, and publishes it from the state
    // file (the commits since changed no data).
    oneroster(
        &src,
        "2026-01-13",
        &[
            p("a", &a, "Fire", "46591", "5A"),
            p("b", &b, "Fast", "46591", "5A"),
        ],
    );
    let s = crate::common::run(&pl, elevflyt::run::Stage::All)
        .await
        .unwrap();
    assert_eq!(s.snapshots_published, 1);
    assert_eq!(s.current_rows_from, "state file");
    assert_eq!(
        rows(
            &pl,
            "SELECT etternavn FROM elev WHERE is_current ORDER BY etternavn"
        )
        .await,
        vec![vec!["Fast".to_string()], vec!["Fire".to_string()]]
    );
    assert_eq!(files_by_kind(&pl, "raw_vigilo").await, (2, 2, 0));
}

/// The county list is made again when its sources' data changed, not when they were only
/// compacted: an OPTIMIZE (delta-rs's, as Spark's or Databricks' would) or `elevflyt maintain`
/// of `elev` gives no new list version on an unchanged run; a run stopped after its commits but
/// before the list leaves the list behind, and the next run — with nothing new to publish —
/// makes it, also after a `maintain` in between (docs/ARCHITECTURE.md, "The county list is
/// written as a change").
#[tokio::test(flavor = "multi_thread")]
async fn the_county_list_follows_its_sources_data_not_their_maintenance() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let pl = pipeline(dir.path(), &[("vigilo", "oneroster-json", &src)], "");
    let file = pl.path.to_str().unwrap().to_string();
    let (a, b) = (tenor(70, false), tenor(71, false));
    for (date, name) in [("2026-01-10", "En"), ("2026-01-11", "To")] {
        oneroster(
            &src,
            date,
            &[
                p("a", &a, name, "46591", "10A"),
                p("b", &b, "Fast", "46591", "10A"),
            ],
        );
        load(&pl).await;
    }
    let version = |table: &'static str| {
        let url = pl.table_url(table);
        async move {
            let t = elevflyt::delta::try_open(&url).await.unwrap().unwrap();
            t.version().unwrap()
        }
    };
    let unchanged_run = || async {
        let s = crate::common::run(&pl, elevflyt::run::Stage::All)
            .await
            .unwrap();
        assert_eq!(s.snapshots_published, 0);
    };
    let list = "SELECT fodselsnummer, elev_namn FROM elevliste_vgs ORDER BY 1";
    let names = rows(&pl, list).await;
    assert_eq!(names.len(), 2);
    let listed = version("elevliste_vgs").await;

    // A plain OPTIMIZE of elev (no checkpoint): a commit that changes no data.
    let before = version("elev").await;
    let elev_table = elevflyt::delta::try_open(&pl.table_url("elev"))
        .await
        .unwrap()
        .unwrap();
    elev_table.optimize().await.unwrap();
    assert!(version("elev").await > before, "elev compacted");
    unchanged_run().await;
    assert_eq!(
        version("elevliste_vgs").await,
        listed,
        "no list after OPTIMIZE"
    );

    // maintain: compaction, vacuum and a checkpoint of every table, the list's own included.
    let m = elevflyt(&["maintain", &file, "--retention-hours", "0", "--force"])
        .output()
        .unwrap();
    assert!(m.status.success(), "{}", String::from_utf8_lossy(&m.stderr));
    let listed = version("elevliste_vgs").await;
    unchanged_run().await;
    assert_eq!(
        version("elevliste_vgs").await,
        listed,
        "no list after maintain"
    );
    assert_eq!(rows(&pl, list).await, names);

    // A day that renames b, stopped after its commits and before the list.
    oneroster(
        &src,
        "2026-01-12",
        &[
            p("a", &a, "To", "46591", "10A"),
            p("b", &b, "Ny", "46591", "10A"),
        ],
    );
    let crashed = elevflyt(&["run", &file])
        .env("ELEVFLYT_CRASH_AT", "after-leveranse")
        .output()
        .unwrap();
    assert!(!crashed.status.success());
    assert_eq!(rows(&pl, list).await, names, "the list is behind");
    // maintain before the next run: every source's newest version is now a checkpoint.
    let m = elevflyt(&["maintain", &file, "--retention-hours", "0", "--force"])
        .output()
        .unwrap();
    assert!(m.status.success(), "{}", String::from_utf8_lossy(&m.stderr));
    let listed = version("elevliste_vgs").await;
    unchanged_run().await;
    assert_eq!(version("elevliste_vgs").await, listed + 1, "the list made");
    let now = rows(&pl, list).await;
    assert_ne!(now, names);
    let b_row = now.iter().find(|r| r[0] == b).unwrap();
    assert!(b_row[1].contains("Ny"), "{b_row:?}");
    // And not again.
    unchanged_run().await;
    assert_eq!(version("elevliste_vgs").await, listed + 1);
}

/// A run compacts the small files of a table it committed to once every ten commits, when the
/// next commit is a checkpoint (docs/ARCHITECTURE.md, "Compaction after a run"): a raw table's
/// markers into one file, an SCD2 table's closed versions into one, its current rows left as
/// they are; the checkpoint holds the compacted files. The rows are those of the same days with
/// `compact_after_run = false`, which leaves every day's files, and the next day still carries
/// its rows from the state file.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_compacts_its_tables_small_files_every_tenth_commit_and_the_rows_stay_the_same() {
    use elevflyt::context::RunContext;
    use elevflyt::run::{execute, Stage};
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for d in ["on", "off"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    let on = pipeline(
        &dir.path().join("on"),
        &[("vigilo", "oneroster-json", &src)],
        "",
    );
    let off = pipeline(
        &dir.path().join("off"),
        &[("vigilo", "oneroster-json", &src)],
        "",
    );
    let text = std::fs::read_to_string(&off.path).unwrap();
    let text = text.replace(
        "schema = \"s\"\n",
        "schema = \"s\"\ncompact_after_run = false\n",
    );
    std::fs::write(&off.path, text).unwrap();
    let off = elevflyt::config::Pipeline::load(&off.path, None).unwrap();
    let (a, b) = (tenor(70, false), tenor(71, true));
    let mut compacted: Vec<(usize, elevflyt::ops::Compacted)> = Vec::new();
    let mut after_compaction = Vec::new();
    for day in 1..=13 {
        let date = format!("2026-03-{day:02}");
        oneroster(
            &src,
            &date,
            &[
                p("a", &a, &format!("Namn{day}"), "46591", "5A"),
                p("b", &b, "Fast", "46591", "5A"),
            ],
        );
        let run = |p: &elevflyt::config::Pipeline| {
            let ctx = RunContext::new(p.clone());
            async move { execute(&ctx, Stage::All).await.unwrap() }
        };
        let s = run(&on).await;
        if compacted.iter().any(|(d, _)| *d == day - 1) {
            after_compaction.push(s.current_rows_from.clone());
        }
        compacted.extend(s.compacted.into_iter().map(|c| (day, c)));
        let s = run(&off).await;
        assert!(
            s.compacted.is_empty(),
            "compact_after_run = false: {:?}",
            s.compacted
        );
    }
    let of = |table: &str| {
        let c: Vec<_> = compacted.iter().filter(|(_, c)| c.table == table).collect();
        assert_eq!(
            c.len(),
            1,
            "{table} compacted once in 13 days: {compacted:?}"
        );
        c[0].clone()
    };
    // A file a day: raw's markers and kjoring's rows from day one, elev's closed versions from
    // day two.
    for (table, first) in [("raw_vigilo", 1), ("elev", 2), ("kjoring", 1)] {
        let (day, c) = of(table);
        assert_eq!(c.error, None);
        assert_eq!(
            c.files_compacted,
            (day + 1 - first) as u64,
            "{table} on day {day}: {c:?}"
        );
        assert_eq!(c.files_written, 1, "{table}: {c:?}");
        let version = c.version.unwrap();
        assert_eq!(
            version % 10,
            9,
            "{table}: the compaction is the checkpointed commit"
        );
        let checkpoint = on
            .table_url(table)
            .to_file_path()
            .unwrap()
            .join(format!("_delta_log/{version:020}.checkpoint.parquet"));
        assert!(checkpoint.exists(), "{}", checkpoint.display());
        // An OPTIMIZE that changes no data, by the run's compaction.
        let commit =
            std::fs::read_to_string(checkpoint.with_file_name(format!("{version:020}.json")))
                .unwrap();
        assert!(commit.contains(r#""operation":"OPTIMIZE""#), "{commit}");
        assert!(commit.contains(r#""elevflyt_stage":"compact""#), "{commit}");
        assert!(!commit.contains(r#""dataChange":true"#), "{commit}");
    }
    assert!(
        !after_compaction.is_empty() && after_compaction.iter().all(|f| f == "state file"),
        "the day after a compaction carries its rows from the state file: {after_compaction:?}"
    );
    // Markers in one file (and the days after it in one each), closed versions likewise; the
    // current rows' file as it was. Without compaction, a file a day.
    let (day, _) = of("raw_vigilo");
    let (markers, records, mixed) = files_by_kind(&on, "raw_vigilo").await;
    assert_eq!((markers, records, mixed), (1 + 13 - day, 13, 0));
    assert_eq!(files_by_kind(&off, "raw_vigilo").await, (13, 13, 0));
    let (day, _) = of("elev");
    assert_eq!(files_by_kind(&on, "elev").await, (1, 1 + 13 - day, 0));
    assert_eq!(files_by_kind(&off, "elev").await, (1, 12, 0));
    let raw = "SELECT entitet, kjelde, rad, post FROM raw_vigilo ORDER BY kjelde, rad";
    assert_eq!(rows(&on, raw).await, rows(&off, raw).await);
    let history = elev(&on).await;
    assert_eq!(history, elev(&off).await);
    assert_eq!(history.len(), 14, "b once, a once a day: {history:?}");
    assert_eq!(
        count(&on, "SELECT count(*) FROM kjoring").await,
        count(&off, "SELECT count(*) FROM kjoring").await
    );
}

/// A compaction after a run that fails is the run's warning, not its failure: the data is
/// published, the summary names the table with the error, and the other tables are compacted.
/// Here a file of `kjoring` (which no run reads) is gone when its tenth commit comes.
#[tokio::test(flavor = "multi_thread")]
async fn a_compaction_that_fails_is_said_in_the_summary_and_the_run_is_ok() {
    use elevflyt::context::RunContext;
    use elevflyt::run::{execute, Stage};
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let pl = pipeline(dir.path(), &[("vigilo", "oneroster-json", &src)], "");
    let a = tenor(72, false);
    let kjoring = pl.table_url("kjoring").to_file_path().unwrap();
    let log = |v: u64| kjoring.join(format!("_delta_log/{v:020}.json"));
    let mut failed_on = None;
    for day in 1..=12 {
        oneroster(
            &src,
            &format!("2026-04-{day:02}"),
            &[p("a", &a, &format!("Namn{day}"), "46591", "5A")],
        );
        // This run's kjoring commit is version 8, the one before a checkpoint: remove the first
        // run's file of kjoring, named in the first commit that adds one.
        let due = log(7).exists() && !log(8).exists();
        if due {
            let add = (0..8)
                .flat_map(|v| {
                    let commit = std::fs::read_to_string(log(v)).unwrap();
                    commit
                        .lines()
                        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                        .collect::<Vec<_>>()
                })
                .find_map(|a| a["add"]["path"].as_str().map(String::from))
                .unwrap();
            std::fs::remove_file(kjoring.join(add)).unwrap();
        }
        let s = execute(&RunContext::new(pl.clone()), Stage::All)
            .await
            .unwrap();
        assert_eq!(s.status, "ok");
        let names: Vec<&str> = s.compacted.iter().map(|c| c.table.as_str()).collect();
        if !due {
            assert!(!names.contains(&"kjoring"), "day {day}: {:?}", s.compacted);
            continue;
        }
        let of = |t: &str| s.compacted.iter().find(|c| c.table == t).unwrap();
        assert!(of("kjoring").error.is_some(), "{:?}", s.compacted);
        assert_eq!(of("kjoring").files_compacted, 0);
        assert_eq!(of("raw_vigilo").error, None, "{:?}", s.compacted);
        assert!(of("raw_vigilo").files_compacted >= 8, "{:?}", s.compacted);
        failed_on = Some(day);
        break;
    }
    let day = failed_on.expect("kjoring's tenth commit within 12 days");
    assert_eq!(elev(&pl).await.len(), day, "every day's rename published");
}
