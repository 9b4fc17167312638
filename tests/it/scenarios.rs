//! The history suite: small stories of a municipality, each with the expected history written
//! out as rows. Dates are the as-of dates of the snapshots; "" is an open end.

use std::path::Path;

use crate::common::{count, rows};
use crate::fixtures::{oneroster, p, pipeline, tenor, vigo, P};
use elevflyt::config::Pipeline;
use elevflyt::run::{execute, RunContext, Stage};

pub async fn load(p: &Pipeline) {
    execute(&RunContext::new(p.clone()), Stage::All)
        .await
        .unwrap();
}

/// elev history: (who, etternavn, valid_from, valid_to), who = system_id or fødselsnummer.
pub async fn elev(p: &Pipeline) -> Vec<Vec<String>> {
    rows(p, "SELECT coalesce(system_id, fodselsnummer) AS who, etternavn, substr(CAST(valid_from AS VARCHAR), 1, 10) AS f, \
             coalesce(substr(CAST(valid_to AS VARCHAR), 1, 10), '') AS t FROM elev ORDER BY who, f").await
}

/// elevforhold history: (who, skolenummer, klasse, valid_from, valid_to).
pub async fn ef(p: &Pipeline) -> Vec<Vec<String>> {
    rows(p, "SELECT e.who, ef.skolenummer, ef.klasse, substr(CAST(ef.valid_from AS VARCHAR), 1, 10) AS f, \
             coalesce(substr(CAST(ef.valid_to AS VARCHAR), 1, 10), '') AS t FROM elevforhold ef \
             JOIN (SELECT id, max(coalesce(system_id, fodselsnummer)) AS who FROM elev GROUP BY id) e ON e.id = ef.elev_id \
             ORDER BY e.who, f, ef.skolenummer").await
}

pub fn t(rows: &[&[&str]]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|r| r.iter().map(|s| s.to_string()).collect())
        .collect()
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    (dir, src)
}

fn or_pipeline(dir: &Path, src: &Path) -> Pipeline {
    pipeline(dir, &[("vigilo", "oneroster-json", src)], "")
}

fn ids(p: &Pipeline) -> impl std::future::Future<Output = Vec<Vec<String>>> + '_ {
    rows(
        p,
        "SELECT DISTINCT coalesce(system_id, fodselsnummer), id FROM elev ORDER BY 1",
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn moves_between_schools() {
    let (dir, src) = setup();
    let pl = or_pipeline(dir.path(), &src);
    oneroster(
        &src,
        "2026-01-10",
        &[p("a", &tenor(1, false), "Ås", "46591", "5A")],
    );
    load(&pl).await;
    oneroster(
        &src,
        "2026-02-10",
        &[p("a", &tenor(1, false), "Ås", "46592", "5B")],
    );
    load(&pl).await;
    assert_eq!(elev(&pl).await, t(&[&["a", "Ås", "2026-01-10", ""]]));
    assert_eq!(
        ef(&pl).await,
        t(&[
            &["a", "46591", "5A", "2026-01-10", "2026-02-10"],
            &["a", "46592", "5B", "2026-02-10", ""],
        ])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn leaves_and_returns_with_the_same_id() {
    let (dir, src) = setup();
    let pl = or_pipeline(dir.path(), &src);
    let a = p("a", &tenor(2, false), "Berg", "46591", "5A");
    let b = p("b", &tenor(3, false), "Dal", "46591", "5A");
    oneroster(&src, "2026-01-10", &[a.clone(), b.clone()]);
    load(&pl).await;
    let before = ids(&pl).await;
    oneroster(&src, "2026-02-10", std::slice::from_ref(&b));
    load(&pl).await;
    oneroster(&src, "2026-03-10", &[a.clone(), b.clone()]);
    load(&pl).await;
    assert_eq!(
        elev(&pl).await,
        t(&[
            &["a", "Berg", "2026-01-10", "2026-02-10"],
            &["a", "Berg", "2026-03-10", ""],
            &["b", "Dal", "2026-01-10", ""],
        ])
    );
    assert_eq!(ids(&pl).await, before, "the returning pupil keeps the id");
    assert_eq!(
        count(&pl, "SELECT count(DISTINCT id) FROM elevforhold").await,
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_name_twice() {
    let (dir, src) = setup();
    let pl = or_pipeline(dir.path(), &src);
    let f = tenor(4, false);
    for (date, name) in [
        ("2026-01-10", "Li"),
        ("2026-02-10", "Lie"),
        ("2026-03-10", "Lien"),
    ] {
        oneroster(&src, date, &[p("a", &f, name, "46591", "5A")]);
        load(&pl).await;
    }
    assert_eq!(
        elev(&pl).await,
        t(&[
            &["a", "Li", "2026-01-10", "2026-02-10"],
            &["a", "Lie", "2026-02-10", "2026-03-10"],
            &["a", "Lien", "2026-03-10", ""],
        ])
    );
    assert_eq!(
        ef(&pl).await,
        t(&[&["a", "46591", "5A", "2026-01-10", ""]]),
        "elevforhold did not change"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn gets_a_fodselsnummer_instead_of_a_d_number() {
    let (dir, src) = setup();
    let pl = or_pipeline(dir.path(), &src);
    oneroster(
        &src,
        "2026-01-10",
        &[p("a", &tenor(5, true), "Nguyen", "46591", "5A")],
    );
    load(&pl).await;
    oneroster(
        &src,
        "2026-02-10",
        &[p("a", &tenor(5, false), "Nguyen", "46591", "5A")],
    );
    load(&pl).await;
    let got = rows(&pl, "SELECT id, fodselsnummer, substr(CAST(valid_from AS VARCHAR), 1, 10) AS f FROM elev ORDER BY f").await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0][0], got[1][0], "same id");
    assert_eq!(
        (got[0][1].clone(), got[1][1].clone()),
        (tenor(5, true), tenor(5, false))
    );
    assert_eq!(
        ef(&pl).await.len(),
        1,
        "elevforhold keeps its id and does not change"
    );
    // The identity map knows both numbers for the one id.
    assert_eq!(
        count(
            &pl,
            &format!("SELECT count(*) FROM elev_id WHERE id = '{}'", got[0][0])
        )
        .await,
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn appears_twice_in_one_file() {
    let (dir, src) = setup();
    let pl = or_pipeline(dir.path(), &src);
    let a = p("a", &tenor(6, false), "To", "46591", "5A");
    let mut twin = a.clone();
    twin.sid = "a2".into();
    oneroster(&src, "2026-01-10", &[a, twin]);
    load(&pl).await;
    assert_eq!(elev(&pl).await, t(&[&["a", "To", "2026-01-10", ""]]));
    assert_eq!(
        rows(&pl, "SELECT regel, system_id FROM avvik").await,
        t(&[&["duplikat", "a2"]])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_school_that_sends_no_file_keeps_its_pupils() {
    let (dir, src) = setup();
    // A list emptied on purpose (the last pupil left): the mass-change guard lets it through.
    let pl = pipeline(
        dir.path(),
        &[("vigo", "vigo-csv", &src)],
        "masseendring = \"warn\"",
    );
    let (a, b) = (tenor(7, false), tenor(8, false));
    vigo(&src, "46520", "20261101", &[(&a, "Ane Ask", "10A")]);
    vigo(&src, "46521", "20261101", &[(&b, "Bo Bu", "10A")]);
    load(&pl).await;
    vigo(&src, "46520", "20261115", &[]);
    load(&pl).await;
    assert_eq!(
        elev(&pl).await,
        t(&[
            &[&a, "Ask", "2026-11-01", "2026-11-15"],
            &[&b, "Bu", "2026-11-01", ""],
        ])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_file_is_placed_in_history() {
    let (dir, src) = setup();
    let pl = or_pipeline(dir.path(), &src);
    let f = tenor(9, false);
    oneroster(
        &src,
        "2026-01-10",
        &[
            p("a", &f, "Aa", "46591", "5A"),
            p("b", &tenor(10, false), "Bb", "46591", "5A"),
        ],
    );
    oneroster(
        &src,
        "2026-03-10",
        &[
            p("a", &f, "Aa", "46591", "5A"),
            p("b", &tenor(10, false), "Bb", "46591", "5A"),
        ],
    );
    load(&pl).await;
    // The February export arrives last: a's name was different then and b was away.
    oneroster(&src, "2026-02-10", &[p("a", &f, "Ab", "46591", "5A")]);
    load(&pl).await;
    assert_eq!(
        elev(&pl).await,
        t(&[
            &["a", "Aa", "2026-01-10", "2026-02-10"],
            &["a", "Ab", "2026-02-10", "2026-03-10"],
            &["a", "Aa", "2026-03-10", ""],
            &["b", "Bb", "2026-01-10", "2026-02-10"],
            &["b", "Bb", "2026-03-10", ""],
        ])
    );
    assert_eq!(
        count(&pl, "SELECT count(*) FROM elev WHERE is_current").await,
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_file_changes_nothing() {
    let (dir, src) = setup();
    let pl = or_pipeline(dir.path(), &src);
    let path = oneroster(
        &src,
        "2026-01-10",
        &[p("a", &tenor(11, false), "Re", "46591", "5A")],
    );
    load(&pl).await;
    let before = crate::common::versions(
        &pl,
        &[
            "elev",
            "elevforhold",
            "skole",
            "raw_vigilo",
            "elevliste_vgs",
        ],
    )
    .await;
    // The same export again under another name (same date), and the same file again.
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push('\n');
    std::fs::write(src.join("again-2026-01-10.json"), text).unwrap();
    load(&pl).await;
    load(&pl).await;
    let after =
        crate::common::versions(&pl, &["elev", "elevforhold", "skole", "elevliste_vgs"]).await;
    assert_eq!(
        after,
        before[..2]
            .iter()
            .chain(&before[2..3])
            .chain(&before[4..5])
            .cloned()
            .collect::<Vec<_>>()
    );
    assert_eq!(elev(&pl).await, t(&[&["a", "Re", "2026-01-10", ""]]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_unchanged_by_name_size_and_time_is_not_read_again() {
    let (dir, src) = setup();
    let pl = or_pipeline(dir.path(), &src);
    let path = oneroster(
        &src,
        "2026-01-10",
        &[p("a", &tenor(11, false), "Re", "46591", "5A")],
    );
    load(&pl).await;
    let raw = count(&pl, "SELECT count(*) FROM raw_vigilo").await;
    let stamp = rows(&pl, "SELECT post FROM raw_vigilo WHERE entitet = '_fil'").await;
    let meta = std::fs::metadata(&path).unwrap();
    assert!(
        stamp[0][0].contains(&format!("\"bytes\":{}", meta.len())),
        "{stamp:?}"
    );
    // Other bytes (not even JSON) under the same name, size and modification time are taken
    // for the file already read, as rsync's quick check takes them: nothing is read.
    let modified = meta.modified().unwrap();
    let set_modified = |t| {
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(t)
            .unwrap()
    };
    std::fs::write(&path, "x".repeat(meta.len() as usize)).unwrap();
    set_modified(modified);
    load(&pl).await;
    assert_eq!(count(&pl, "SELECT count(*) FROM raw_vigilo").await, raw);
    // Touched, it is read again: new bytes, so parsed, and refused as not JSON.
    set_modified(modified + std::time::Duration::from_secs(60));
    let err = execute(&RunContext::new(pl.clone()), Stage::All)
        .await
        .unwrap_err()
        .to_string();
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(name), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn moves_between_source_systems() {
    let (dir, src) = setup();
    let vigo_dir = dir.path().join("vigo");
    pipeline(
        dir.path(),
        &[
            ("vigilo", "oneroster-json", &src),
            ("vigo", "vigo-csv", &vigo_dir),
        ],
        // The only pupil leaves Vigilo: a deliberate, accepted mass change.
        "masseendring = \"warn\"",
    );
    // Vigo delivers nothing the first day: the source says it may be empty.
    let file = dir.path().join("pipeline.toml");
    let body = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        body.replace(
            "format = \"vigo-csv\"",
            "format = \"vigo-csv\"\noptional = true",
        ),
    )
    .unwrap();
    let pl = Pipeline::load(&file, None).unwrap();
    let f = tenor(12, false);
    oneroster(&src, "2026-01-10", &[p("a", &f, "Skift", "46591", "10A")]);
    load(&pl).await;
    let id = rows(&pl, "SELECT id FROM elev").await[0][0].clone();
    // The pupil leaves the Vigilo school and turns up on a Vigo list, matched by fødselsnummer.
    oneroster(&src, "2026-02-10", &[]);
    vigo(&vigo_dir, "46520", "20260210", &[(&f, "Test Skift", "10B")]);
    load(&pl).await;
    let got = rows(
        &pl,
        "SELECT DISTINCT id, kildesystem FROM elev ORDER BY kildesystem",
    )
    .await;
    assert_eq!(got, t(&[&[&id, "vigilo"], &[&id, "vigo"]]));
    assert_eq!(
        count(&pl, "SELECT count(*) FROM elev WHERE is_current").await,
        1
    );
    assert_eq!(count(&pl, "SELECT count(*) FROM elev_id").await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_class_within_the_school() {
    let (dir, src) = setup();
    let pl = pipeline(dir.path(), &[("vigo", "vigo-csv", &src)], "");
    let f = tenor(13, false);
    vigo(&src, "46520", "20261101", &[(&f, "Kai Klasse", "10A")]);
    vigo(&src, "46520", "20261201", &[(&f, "Kai Klasse", "10B")]);
    load(&pl).await;
    assert_eq!(
        ef(&pl).await,
        t(&[
            &[&f, "46520", "10A", "2026-11-01", "2026-12-01"],
            &[&f, "46520", "10B", "2026-12-01", ""],
        ])
    );
    assert_eq!(elev(&pl).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn unchanged_snapshots_write_no_versions() {
    let (dir, src) = setup();
    let pl = or_pipeline(dir.path(), &src);
    let pupils: Vec<P> = (0..5)
        .map(|i| {
            p(
                &format!("u{i}"),
                &tenor(20 + i, false),
                "Lik",
                "46591",
                "5A",
            )
        })
        .collect();
    oneroster(&src, "2026-01-10", &pupils);
    load(&pl).await;
    let before =
        crate::common::versions(&pl, &["elev", "elevforhold", "skole", "elevliste_vgs"]).await;
    oneroster(&src, "2026-02-10", &pupils);
    oneroster(&src, "2026-03-10", &pupils);
    load(&pl).await;
    assert_eq!(
        crate::common::versions(&pl, &["elev", "elevforhold", "skole", "elevliste_vgs"]).await,
        before
    );
    assert_eq!(count(&pl, "SELECT count(*) FROM elev").await, 5);
    assert_eq!(
        count(&pl, "SELECT count(*) FROM leveranse").await,
        3,
        "the snapshots are recorded"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn moves_between_schools_on_vigo_lists() {
    let (dir, src) = setup();
    let pl = pipeline(dir.path(), &[("vigo", "vigo-csv", &src)], "");
    let (m, o) = (tenor(14, false), tenor(15, false));
    vigo(
        &src,
        "46520",
        "20261101",
        &[(&m, "Mo Flytt", "10A"), (&o, "Ola Blir", "10A")],
    );
    vigo(&src, "46521", "20261101", &[]);
    load(&pl).await;
    // The new school's list comes first, then the old school's list without the pupil.
    vigo(&src, "46521", "20261110", &[(&m, "Mo Flytt", "10C")]);
    load(&pl).await;
    vigo(&src, "46520", "20261120", &[(&o, "Ola Blir", "10A")]);
    load(&pl).await;
    assert_eq!(
        ef(&pl).await,
        t(&[
            &[&m, "46520", "10A", "2026-11-01", "2026-11-20"],
            &[&m, "46521", "10C", "2026-11-10", ""],
            &[&o, "46520", "10A", "2026-11-01", ""],
        ])
    );
    assert_eq!(
        elev(&pl).await,
        t(&[
            &[&m, "Flytt", "2026-11-01", ""],
            &[&o, "Blir", "2026-11-01", ""]
        ]),
        "the mover is still a pupil: another school has him"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_list_from_one_school() {
    let (dir, src) = setup();
    let pl = pipeline(dir.path(), &[("vigo", "vigo-csv", &src)], "");
    let (a, b) = (tenor(16, false), tenor(17, false));
    vigo(&src, "46520", "20261101", &[(&a, "Al Sein", "10A")]);
    vigo(&src, "46520", "20261201", &[(&a, "Al Sein", "10A")]);
    load(&pl).await;
    // A list from 15 November turns up late: a was in 10B then, and b was there too.
    vigo(
        &src,
        "46520",
        "20261115",
        &[(&a, "Al Sein", "10B"), (&b, "Bea Sein", "10B")],
    );
    load(&pl).await;
    assert_eq!(
        ef(&pl).await,
        t(&[
            &[&a, "46520", "10A", "2026-11-01", "2026-11-15"],
            &[&a, "46520", "10B", "2026-11-15", "2026-12-01"],
            &[&a, "46520", "10A", "2026-12-01", ""],
            &[&b, "46520", "10B", "2026-11-15", "2026-12-01"],
        ])
    );
    assert_eq!(
        elev(&pl).await,
        t(&[
            &[&a, "Sein", "2026-11-01", ""],
            &[&b, "Sein", "2026-11-15", "2026-12-01"]
        ])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn all_files_at_once_equals_one_run_per_file() {
    let (dir, src) = setup();
    let (dir2, src2) = setup();
    let one = or_pipeline(dir.path(), &src);
    let all = or_pipeline(dir2.path(), &src2);
    let snaps = [
        (
            "2026-01-10",
            vec![
                p("a", &tenor(30, false), "A", "46591", "5A"),
                p("b", &tenor(31, false), "B", "46591", "5B"),
            ],
        ),
        (
            "2026-02-10",
            vec![p("a", &tenor(30, false), "A2", "46592", "5A")],
        ),
        (
            "2026-03-10",
            vec![
                p("b", &tenor(31, false), "B", "46591", "5B"),
                p("c", &tenor(32, false), "C", "46592", "10A"),
            ],
        ),
    ];
    for (date, pupils) in &snaps {
        oneroster(&src, date, pupils);
        load(&one).await;
        oneroster(&src2, date, pupils);
    }
    load(&all).await;
    assert_eq!(elev(&one).await, elev(&all).await);
    assert_eq!(ef(&one).await, ef(&all).await);
    assert_eq!(elev(&one).await.len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_publish_is_finished_by_the_next_run() {
    // A publish killed after its merges but before it recorded the snapshots: the next run sees
    // the snapshots as new, notices history already holds them and rebuilds without duplicates.
    let (dir, src) = setup();
    let pl = or_pipeline(dir.path(), &src);
    oneroster(
        &src,
        "2026-01-10",
        &[p("a", &tenor(40, false), "X", "46591", "5A")],
    );
    oneroster(
        &src,
        "2026-02-10",
        &[
            p("a", &tenor(40, false), "Y", "46591", "5A"),
            p("b", &tenor(41, false), "Z", "46591", "5A"),
        ],
    );
    load(&pl).await;
    let expected = (elev(&pl).await, ef(&pl).await);
    std::fs::remove_dir_all(dir.path().join("lake/c/s/leveranse")).unwrap();
    load(&pl).await;
    assert_eq!((elev(&pl).await, ef(&pl).await), expected);
}

/// Each data file of `table` has either current rows only or closed versions only, as the
/// daily commit keeps them; and the newest commit's operation metrics.
async fn file_layout(pl: &Pipeline, table: &str) -> (Vec<(i64, i64)>, serde_json::Value) {
    use futures::TryStreamExt;
    let t = elevflyt::delta::try_open(&pl.table_url(table))
        .await
        .unwrap()
        .unwrap();
    let files = elevflyt::delta::file_views(&t).await.unwrap();
    let layout = files
        .iter()
        .map(|f| {
            let s: serde_json::Value = serde_json::from_str(&f.stats().unwrap()).unwrap();
            (
                s["numRecords"].as_i64().unwrap(),
                s["nullCount"]["valid_to"].as_i64().unwrap(),
            )
        })
        .collect();
    let last: Vec<_> = t.history(Some(1)).try_collect().await.unwrap();
    (layout, last[0].info["operationMetrics"].clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daily_run_rewrites_only_the_files_with_current_rows() {
    let (dir, src) = setup();
    let pl = or_pipeline(dir.path(), &src);
    let (a, b, c) = (tenor(1, false), tenor(2, false), tenor(3, false));
    for (date, names) in [
        ("2026-01-10", ["Aa", "Bb", "Cc"]),
        ("2026-01-11", ["Ab", "Bb", "Cc"]),
        ("2026-01-12", ["Ab", "Bc", "Cc"]),
    ] {
        oneroster(
            &src,
            date,
            &[
                p("a", &a, names[0], "46591", "5A"),
                p("b", &b, names[1], "46591", "5A"),
                p("c", &c, names[2], "46591", "5A"),
            ],
        );
        load(&pl).await;
    }
    assert_eq!(
        elev(&pl).await,
        t(&[
            &["a", "Aa", "2026-01-10", "2026-01-11"],
            &["a", "Ab", "2026-01-11", ""],
            &["b", "Bb", "2026-01-10", "2026-01-12"],
            &["b", "Bc", "2026-01-12", ""],
            &["c", "Cc", "2026-01-10", ""],
        ])
    );
    let (layout, metrics) = file_layout(&pl, "elev").await;
    // valid_to is null on current rows: a file is all current (nulls = rows) or all history.
    assert!(
        layout.iter().all(|(rows, open)| *open == 0 || open == rows),
        "files mix current and closed rows: {layout:?}"
    );
    assert_eq!(
        layout.iter().map(|(_, open)| open).sum::<i64>(),
        3,
        "three current rows"
    );
    assert_eq!(
        layout.iter().map(|(rows, open)| rows - open).sum::<i64>(),
        2,
        "two closed versions"
    );
    // Day 3 read the file with the current rows, not the one with day 2's closed version.
    assert_eq!(metrics["num_target_rows_updated"], 1, "{metrics}");
    assert_eq!(metrics["num_target_rows_inserted"], 1, "{metrics}");
    assert_eq!(metrics["num_target_files_scanned"], 1, "{metrics}");
    assert_eq!(
        metrics["num_target_files_skipped_during_scan"], 1,
        "{metrics}"
    );
}

/// A file of current rows with nothing to close is left as it is, closed versions and all: a
/// first load of two snapshots appends one file holding b's closed and current versions; a
/// later pupil c gets a file of its own; when c changes, only c's file is rewritten and b's
/// closed version is not written a second time.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_with_nothing_to_close_keeps_its_closed_versions_once() {
    let (dir, src) = setup();
    let pl = or_pipeline(dir.path(), &src);
    let (a, b, c) = (tenor(1, false), tenor(2, false), tenor(3, false));
    oneroster(
        &src,
        "2026-01-10",
        &[
            p("a", &a, "Aa", "46591", "5A"),
            p("b", &b, "Bb", "46591", "5A"),
        ],
    );
    oneroster(
        &src,
        "2026-01-11",
        &[
            p("a", &a, "Aa", "46591", "5A"),
            p("b", &b, "Bc", "46591", "5A"),
        ],
    );
    load(&pl).await;
    for (date, c_name) in [("2026-01-12", "Cc"), ("2026-01-13", "Cd")] {
        oneroster(
            &src,
            date,
            &[
                p("a", &a, "Aa", "46591", "5A"),
                p("b", &b, "Bc", "46591", "5A"),
                p("c", &c, c_name, "46591", "5A"),
            ],
        );
        load(&pl).await;
    }
    assert_eq!(
        elev(&pl).await,
        t(&[
            &["a", "Aa", "2026-01-10", ""],
            &["b", "Bb", "2026-01-10", "2026-01-11"],
            &["b", "Bc", "2026-01-11", ""],
            &["c", "Cc", "2026-01-12", "2026-01-13"],
            &["c", "Cd", "2026-01-13", ""],
        ])
    );
    let (layout, metrics) = file_layout(&pl, "elev").await;
    assert_eq!(metrics["num_target_rows_updated"], 1, "{metrics}");
    assert_eq!(metrics["num_target_files_scanned"], 2, "{metrics}");
    assert_eq!(metrics["num_target_files_removed"], 1, "{metrics}");
    assert!(
        layout.contains(&(3, 2)),
        "the first load's file (a, b closed, b) is still there: {layout:?}"
    );
}
