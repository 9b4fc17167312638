//! Bad deliveries on top of a loaded warehouse (issue 14): each story is the delivery, what the
//! tables and the exit code are after it, and what the operator reads.

use crate::common::{count, elevflyt, rows, versions};
use crate::fixtures::{oneroster, oneroster_parts, p, pipeline, tenor, vigo, ONEROSTER_PARTS, P};
use crate::scenarios::{elev, t};
use elevflyt::run::{execute, RunContext, Stage};
use elevflyt::Error;

const DATA_TABLES: &[&str] = &["elev", "elevforhold", "skole", "elevliste_vgs", "elev_id"];

fn pupils(n: u32, school: &str) -> Vec<P> {
    (0..n)
        .map(|i| {
            p(
                &format!("u{i}"),
                &tenor(100 + i, false),
                &format!("Etter{i}"),
                school,
                "10A",
            )
        })
        .collect()
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    (dir, src)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partial_oneroster_snapshot_is_held_back_until_it_is_complete() {
    let (dir, src) = setup();
    let pl = pipeline(dir.path(), &[("vigilo", "oneroster-json", &src)], "");
    let mut day1 = pupils(3, "46591");
    oneroster_parts(&src, "2026-01-10", &day1, ONEROSTER_PARTS);
    execute(&RunContext::new(pl.clone()), Stage::All)
        .await
        .unwrap();
    let before = versions(&pl, DATA_TABLES).await;

    // The next day only the users file arrives (a new pupil among them).
    day1.push(p("u9", &tenor(199, false), "Ny", "46591", "10B"));
    oneroster_parts(&src, "2026-02-10", &day1, &["users"]);
    let err = execute(&RunContext::new(pl.clone()), Stage::All)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Incomplete(_)), "{err:?}");
    for expected in [
        "orgs",
        "classes",
        "enrollments",
        "users-2026-02-10.json",
        "2026-02-10",
    ] {
        assert!(msg.contains(expected), "{expected} in: {msg}");
    }
    // Nothing closed, nothing published: every data table is as it was.
    assert_eq!(versions(&pl, DATA_TABLES).await, before);
    assert_eq!(
        count(&pl, "SELECT count(*) FROM elevforhold WHERE is_current").await,
        3
    );
    assert_eq!(count(&pl, "SELECT count(*) FROM elevliste_vgs").await, 3);
    assert_eq!(
        rows(
            &pl,
            "SELECT status FROM kjoring ORDER BY started DESC LIMIT 1"
        )
        .await,
        [["error"]]
    );

    // The rest arrives: the snapshot is published as a whole.
    oneroster_parts(&src, "2026-02-10", &day1, ONEROSTER_PARTS);
    execute(&RunContext::new(pl.clone()), Stage::All)
        .await
        .unwrap();
    assert_eq!(
        rows(&pl, "SELECT system_id, substr(CAST(valid_from AS VARCHAR), 1, 10) FROM elev WHERE is_current ORDER BY 1").await,
        t(&[
            &["u0", "2026-01-10"],
            &["u1", "2026-01-10"],
            &["u2", "2026-01-10"],
            &["u9", "2026-02-10"],
        ])
    );
    assert_eq!(count(&pl, "SELECT count(*) FROM elevliste_vgs").await, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_users_array_stops_the_run_until_it_is_accepted() {
    let (dir, src) = setup();
    let pl = pipeline(dir.path(), &[("vigilo", "oneroster-json", &src)], "");
    oneroster(&src, "2026-01-10", &pupils(25, "46591"));
    execute(&RunContext::new(pl.clone()), Stage::All)
        .await
        .unwrap();
    let before = versions(&pl, DATA_TABLES).await;

    // An export with an empty users (and enrollments) array.
    oneroster(&src, "2026-02-10", &[]);
    let err = execute(&RunContext::new(pl.clone()), Stage::All)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::RuleFailed(_)), "{err:?}");
    for expected in ["masseendring", "elev:", "25 av 25", "--accept-mass-change"] {
        assert!(msg.contains(expected), "{expected} in: {msg}");
    }
    assert_eq!(versions(&pl, DATA_TABLES).await, before, "no table changed");
    assert_eq!(
        count(&pl, "SELECT count(*) FROM elev WHERE is_current").await,
        25
    );
    assert_eq!(
        rows(
            &pl,
            "SELECT status FROM kjoring ORDER BY started DESC LIMIT 1"
        )
        .await,
        [["fail"]]
    );
    // Every rerun stops the same way.
    assert!(execute(&RunContext::new(pl.clone()), Stage::All)
        .await
        .is_err());

    // Accepted deliberately: published.
    let mut ctx = RunContext::new(pl.clone());
    ctx.accept_mass_change = true;
    execute(&ctx, Stage::All).await.unwrap();
    assert_eq!(
        count(&pl, "SELECT count(*) FROM elev WHERE is_current").await,
        0
    );
    assert_eq!(count(&pl, "SELECT count(*) FROM elevliste_vgs").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vigo_list_with_only_a_header_fails_from_the_command_line_until_accepted() {
    let (dir, src) = setup();
    pipeline(dir.path(), &[("vigo", "vigo-csv", &src)], "");
    let file = dir.path().join("pipeline.toml");
    let f = file.to_str().unwrap();
    let (a, b) = (tenor(7, false), tenor(8, false));
    vigo(
        &src,
        "46520",
        "20261101",
        &[(&a, "Ane Ask", "10A"), (&b, "Bo Bu", "10A")],
    );
    assert!(elevflyt(&["run", f]).status().unwrap().success());
    vigo(&src, "46520", "20261115", &[]);
    let out = elevflyt(&["run", f]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("skule 46520") && stderr.contains("--accept-mass-change"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("fail-regel broten").count(),
        1,
        "said once: {stderr}"
    );
    let pl = elevflyt::config::Pipeline::load(&file, None).unwrap();
    assert_eq!(count(&pl, "SELECT count(*) FROM elevliste_vgs").await, 2);

    let out = elevflyt(&["run", f, "--accept-mass-change"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(count(&pl, "SELECT count(*) FROM elevliste_vgs").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrected_export_under_the_same_name_replaces_the_snapshot() {
    let (dir, src) = setup();
    let pl = pipeline(dir.path(), &[("vigilo", "oneroster-json", &src)], "");
    let all = pupils(3, "46591");
    oneroster(&src, "2026-01-10", &all);
    execute(&RunContext::new(pl.clone()), Stage::All)
        .await
        .unwrap();
    // The February export was read while it was still being written: one pupil of three.
    oneroster(&src, "2026-02-10", &all[..1]);
    execute(&RunContext::new(pl.clone()), Stage::All)
        .await
        .unwrap();
    assert_eq!(
        count(&pl, "SELECT count(*) FROM elev WHERE is_current").await,
        1
    );

    // The complete file arrives under the same name: it replaces the partial one in history,
    // so the two pupils were never away.
    oneroster(&src, "2026-02-10", &all);
    let s = execute(&RunContext::new(pl.clone()), Stage::All)
        .await
        .unwrap();
    assert_eq!(s.snapshots_published, 1, "{s:?}");
    assert_eq!(
        elev(&pl).await,
        t(&[
            &["u0", "Etter0", "2026-01-10", ""],
            &["u1", "Etter1", "2026-01-10", ""],
            &["u2", "Etter2", "2026-01-10", ""],
        ])
    );
    assert_eq!(count(&pl, "SELECT count(*) FROM elevliste_vgs").await, 3);
    assert!(elevflyt::ops::check(&pl).await.unwrap().is_empty());
    // Unchanged afterwards: a rerun publishes nothing.
    let s = execute(&RunContext::new(pl.clone()), Stage::All)
        .await
        .unwrap();
    assert_eq!(s.snapshots_published, 0);
}

/// Sets a file's modification time to `secs` after 2026-03-01T00:00:00Z.
fn touch(path: &std::path::Path, secs: u64) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_772_323_200 + secs);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn undated_files_of_one_run_are_one_snapshot() {
    let (dir, src) = setup();
    let pl = pipeline(dir.path(), &[("vigilo", "oneroster-json", &src)], "");
    // Five files without a date in their names, written minutes apart.
    for (i, f) in oneroster_parts(&src, "x", &pupils(3, "46591"), ONEROSTER_PARTS)
        .iter()
        .enumerate()
    {
        let undated = src.join(format!(
            "{}.json",
            f.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .trim_end_matches("-x.json")
        ));
        std::fs::rename(f, &undated).unwrap();
        touch(&undated, 600 * i as u64);
    }
    execute(&RunContext::new(pl.clone()), Stage::All)
        .await
        .unwrap();
    // One snapshot, at the newest file's time: nobody closed and reopened minutes later.
    assert_eq!(
        rows(&pl, "SELECT CAST(as_of AS VARCHAR) FROM leveranse").await,
        [["2026-03-01T00:40:00Z"]]
    );
    assert_eq!(count(&pl, "SELECT count(*) FROM elev").await, 3);
    assert_eq!(count(&pl, "SELECT count(*) FROM elevforhold").await, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_dated_in_the_future_is_refused() {
    let (dir, src) = setup();
    let pl = pipeline(dir.path(), &[("vigilo", "oneroster-json", &src)], "");
    oneroster(&src, "2026-01-10", &pupils(3, "46591"));
    execute(&RunContext::new(pl.clone()), Stage::All)
        .await
        .unwrap();
    let before = versions(&pl, &["raw_vigilo", "elev", "elevforhold"]).await;
    oneroster(&src, "2099-01-01", &pupils(2, "46591"));
    let err = execute(&RunContext::new(pl.clone()), Stage::All)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::Input { .. })
            && msg.contains("export-2099-01-01.json")
            && msg.contains("2099-01-01")
            && msg.contains("later than"),
        "{msg}"
    );
    assert_eq!(
        versions(&pl, &["raw_vigilo", "elev", "elevforhold"]).await,
        before,
        "nothing ingested or published"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn as_of_does_not_merge_dated_files_into_one_snapshot() {
    let (dir, src) = setup();
    pipeline(dir.path(), &[("vigilo", "oneroster-json", &src)], "");
    let file = dir.path().join("pipeline.toml");
    oneroster(&src, "2026-03-01", &pupils(3, "46591"));
    oneroster(&src, "2026-03-08", &pupils(2, "46591"));
    let out = elevflyt(&["run", file.to_str().unwrap(), "--as-of", "2026-03-10"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("export-2026-03-01.json") && stderr.contains("export-2026-03-08.json"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("lake/raw_vigilo").exists(),
        "nothing ingested"
    );
    // One date at a time is fine.
    std::fs::remove_file(src.join("export-2026-03-08.json")).unwrap();
    let out = elevflyt(&["run", file.to_str().unwrap(), "--as-of", "2026-03-02"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stray_entries_in_a_source_folder_are_skipped_with_a_warning() {
    let (dir, src) = setup();
    let pl = pipeline(dir.path(), &[("vigo", "vigo-csv", &src)], "");
    vigo(
        &src,
        "46520",
        "20261101",
        &[(&tenor(7, false), "Ane Ask", "10A")],
    );
    // An Excel lock file, a symlink loop and a dangling link beside the list.
    std::fs::write(src.join("~$elevliste_46520_20261101.csv"), b"lock").unwrap();
    std::os::unix::fs::symlink(&src, src.join("loop")).unwrap();
    std::os::unix::fs::symlink(src.join("gone.csv"), src.join("dangling.csv")).unwrap();
    let s = execute(&RunContext::new(pl.clone()), Stage::All)
        .await
        .unwrap();
    assert_eq!(s.files_read, ["vigo/elevliste_46520_20261101.csv"]);
    assert_eq!(count(&pl, "SELECT count(*) FROM elevliste_vgs").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_report_counts_pupils_with_invalid_numbers_not_masked_values() {
    let (dir, src) = setup();
    pipeline(dir.path(), &[("vigo", "vigo-csv", &src)], "");
    let file = dir.path().join("pipeline.toml");
    let f = file.to_str().unwrap();
    // Two pupils of one school born the same day, both with a mistyped number: the masked
    // values are the same (010109*****), the pupils are two.
    vigo(
        &src,
        "46520",
        "20261101",
        &[
            ("01010912345", "Ane Ask", "10A"),
            ("01010954321", "Bo Bu", "10A"),
            (&tenor(7, false), "Cy Ce", "10A"),
        ],
    );
    assert!(elevflyt(&["run", f]).status().unwrap().success());
    let out = elevflyt(&["report", f, "--format", "json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ugyldige_fodselsnummer"], 2, "{report}");
    let chart = &report["kvalitet_over_tid"];
    assert_eq!(
        chart[chart.as_array().unwrap().len() - 1]["ugyldige_fodselsnummer"],
        2.0
    );
    // The school fixes one: the next list counts one.
    vigo(
        &src,
        "46520",
        "20261115",
        &[
            ("01010912345", "Ane Ask", "10A"),
            (&tenor(8, false), "Bo Bu", "10A"),
            (&tenor(7, false), "Cy Ce", "10A"),
        ],
    );
    assert!(elevflyt(&["run", f]).status().unwrap().success());
    let out = elevflyt(&["report", f, "--format", "json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ugyldige_fodselsnummer"], 1, "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_number_typed_with_a_space_is_read_and_reported_and_a_5_mb_name_stops_at_the_school() {
    let (dir, src) = setup();
    let pl = pipeline(dir.path(), &[("vigo", "vigo-csv", &src)], "");
    let spaced = tenor(7, false);
    let spaced = format!("{} {}", &spaced[..6], &spaced[6..]);
    let dashed = tenor(10, false);
    let dashed = format!("{}-{}", &dashed[..6], &dashed[6..]);
    let huge = format!("Ane {}", "Å".repeat(5_000_000 / 2));
    vigo(
        &src,
        "46520",
        "20261101",
        &[
            (&spaced, "Bo Bu", "10A"),
            (&tenor(8, false), &huge, "10A"),
            (&tenor(9, false), "Cy Ce", "10A"),
            (&dashed, "Di Do", "10A"),
        ],
    );
    execute(&RunContext::new(pl.clone()), Stage::All)
        .await
        .unwrap();
    // The spaced and the dashed number are published normalised, each pupil with the
    // enrollment of the same row; the school reads a warning about each.
    assert_eq!(
        rows(
            &pl,
            "SELECT fodselsnummer FROM elevliste_vgs WHERE elev_namn = 'Di Do'"
        )
        .await,
        [[tenor(10, false)]]
    );
    assert_eq!(
        rows(
            &pl,
            "SELECT fodselsnummer FROM elevliste_vgs WHERE elev_namn = 'Bo Bu'"
        )
        .await,
        [[tenor(7, false)]]
    );
    assert_eq!(
        rows(
            &pl,
            "SELECT regel, alvorsgrad, felt, verdi FROM avvik ORDER BY regel"
        )
        .await,
        t(&[
            &["felt_for_langt", "drop", "etternavn", ""],
            &[
                "fnr_formatert",
                "warn",
                "fodselsnummer",
                &format!("{}*****", &tenor(7, false)[..6])
            ],
            &[
                "fnr_formatert",
                "warn",
                "fodselsnummer",
                &format!("{}*****", &tenor(10, false)[..6])
            ],
        ])
    );
    // The broken name reaches neither the county's list nor any table but raw.
    assert_eq!(count(&pl, "SELECT count(*) FROM elevliste_vgs").await, 3);
    assert_eq!(
        count(&pl, "SELECT max(length(etternavn)) FROM elev").await,
        2,
        "only the short names are stored"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vigo_list_whose_rows_name_another_school_moves_nobody() {
    let (dir, src) = setup();
    let pl = pipeline(dir.path(), &[("vigo", "vigo-csv", &src)], "");
    let (a, b) = (tenor(7, false), tenor(8, false));
    vigo(&src, "46520", "20261101", &[(&a, "Ane Ask", "10A")]);
    vigo(&src, "46521", "20261101", &[(&b, "Bo Bu", "10A")]);
    execute(&RunContext::new(pl.clone()), Stage::All)
        .await
        .unwrap();
    // A list named for 46520 whose rows all say 46521 (a copy-paste from the other school).
    let wrong = src.join("elevliste_46520_20261115.csv");
    std::fs::write(
        &wrong,
        format!("kommunenummer;skolenummer;fylkesnummer;klasse;fødselsnummer;elev_namn\r\n4621;46521;46;10A;{b};Bo Bu\r\n"),
    )
    .unwrap();
    let err = execute(&RunContext::new(pl.clone()), Stage::All)
        .await
        .unwrap_err();
    // Its rows are deviations, so the list for 46520 is empty: the guard stops it.
    assert!(err.to_string().contains("skule 46520"), "{err}");
    assert_eq!(
        rows(&pl, "SELECT regel, skolenummer, melding FROM avvik WHERE regel = 'skule_ulik_liste'").await,
        t(&[&[
            "skule_ulik_liste",
            "46521",
            "Rada står på skule 46521, men lista er for skule 46520: rett skulenummeret i lista, eller send lista for rett skule"
        ]])
    );
    // Nobody moved: each pupil is still at their own school.
    assert_eq!(
        rows(
            &pl,
            "SELECT skolenummer, count(*) FROM elevforhold WHERE is_current GROUP BY 1 ORDER BY 1"
        )
        .await,
        t(&[&["46520", "1"], &["46521", "1"]])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_utf8_list_with_one_stray_byte_is_refused_and_names_keep_their_letters() {
    let (dir, src) = setup();
    let pl = pipeline(dir.path(), &[("vigo", "vigo-csv", &src)], "");
    let (a, b) = (tenor(7, false), tenor(8, false));
    let header = "kommunenummer;skolenummer;fylkesnummer;klasse;fødselsnummer;elev_namn\n";
    let utf8 =
        format!("{header}4621;46520;46;10A;{a};Åse Bjørnstad\n4621;46520;46;10A;{b};Ærle Øyen\n");
    std::fs::write(src.join("elevliste_46520_20261101.csv"), &utf8).unwrap();
    execute(&RunContext::new(pl.clone()), Stage::All)
        .await
        .unwrap();
    // The next list is UTF-8 too, but one line was pasted from a Windows-1252 file.
    let mut mixed = utf8.replace("10A;", "10B;").into_bytes();
    mixed.extend_from_slice(b"4621;46520;46;10B;");
    mixed.extend_from_slice(tenor(9, false).as_bytes());
    mixed.extend_from_slice(b";Kn\xf8t S\xf8rli\n");
    std::fs::write(src.join("elevliste_46520_20261115.csv"), mixed).unwrap();
    let err = execute(&RunContext::new(pl.clone()), Stage::All)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("elevliste_46520_20261115.csv, line 4") && msg.contains("not UTF-8"),
        "{msg}"
    );
    // No name got a new version with mojibake.
    assert_eq!(
        rows(
            &pl,
            "SELECT etternavn, count(*) FROM elev GROUP BY 1 ORDER BY 1"
        )
        .await,
        t(&[&["Bjørnstad", "1"], &["Øyen", "1"]])
    );
}

/// The cloud credential variables, removed from a child's environment.
const CLOUD_VARIABLES: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_SKIP_SIGNATURE",
    "AWS_METADATA_ENDPOINT",
    "AWS_ENDPOINT",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_SAS_KEY",
    "AZURE_STORAGE_TOKEN",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_STORAGE_USE_EMULATOR",
    "AZURE_SKIP_SIGNATURE",
    "AZURE_MSI_ENDPOINT",
    "AZURE_USE_AZURE_CLI",
];

fn without_cloud_credentials(mut c: std::process::Command) -> std::process::Command {
    for v in CLOUD_VARIABLES {
        c.env_remove(v);
    }
    c
}

#[test]
fn a_dry_run_against_cloud_storage_says_which_credentials_are_missing() {
    let bergen = crate::common::repo().join("pipelines/bergen.toml");
    let f = bergen.to_str().unwrap();
    for (warehouse, variable) in [
        ("s3://elevflyt-test/lake", "AWS_ACCESS_KEY_ID"),
        ("az://elevflyt/lake", "AZURE_STORAGE_ACCOUNT_KEY"),
    ] {
        // Nothing is sent: without credentials the run stops before any request.
        let out =
            without_cloud_credentials(elevflyt(&["run", f, "--warehouse", warehouse, "--dry-run"]))
                .output()
                .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(variable) && !stderr.contains("169.254"),
            "{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "said once: {stderr}");
    }
    // Credentials, but storage that does not answer: the dry run says so instead of "ok".
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let out = without_cloud_credentials(elevflyt(&[
        "run",
        f,
        "--warehouse",
        "s3://elevflyt-test/lake",
        "--dry-run",
    ]))
    .env("AWS_ACCESS_KEY_ID", "test")
    .env("AWS_SECRET_ACCESS_KEY", "test")
    .env("AWS_REGION", "eu-north-1")
    .env("AWS_ENDPOINT", format!("http://127.0.0.1:{port}"))
    .env("AWS_ALLOW_HTTP", "true")
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("warehouse s3://elevflyt-test/lake") && stderr.contains("cannot be read"),
        "{stderr}"
    );
}

/// A small tmpfs mounted for a test, unmounted when dropped (also when the test fails).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_is_said_once_and_leaves_consistent_tables() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&dir.path().join("disk"), "120k") else {
        // Mounting needs root (CI and the development machine have it).
        eprintln!("SKIPPED: cannot mount a tmpfs here");
        return;
    };
    let w = disk.0.join("lake");
    let w = w.to_str().unwrap();
    let bergen = crate::common::repo().join("pipelines/bergen.toml");
    let out = elevflyt(&["run", bergen.to_str().unwrap(), "--warehouse", w])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let not_info: Vec<&str> = stderr.lines().filter(|l| !l.contains(" INFO ")).collect();
    assert_eq!(not_info.len(), 1, "one message: {not_info:?}");
    assert!(
        not_info[0].starts_with("error: no space left on device under"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    let p = crate::common::sample("bergen.toml", w);
    assert!(elevflyt::ops::check(&p).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_that_would_empty_the_county_list_keeps_the_list_until_accepted() {
    let (dir, src) = setup();
    let pl = pipeline(dir.path(), &[("vigilo", "oneroster-json", &src)], "");
    oneroster(&src, "2026-01-10", &pupils(12, "46591"));
    execute(&RunContext::new(pl.clone()), Stage::All)
        .await
        .unwrap();
    assert_eq!(count(&pl, "SELECT count(*) FROM elevliste_vgs").await, 12);
    let list_version = versions(&pl, &["elevliste_vgs"]).await;
    // Every 10th grader suddenly in a 5th-grade class (a broken class mapping): no pupil or
    // enrollment ends, but the county's list would be emptied.
    let fifth: Vec<P> = pupils(12, "46591")
        .into_iter()
        .map(|mut p| {
            p.class = "5A".into();
            p
        })
        .collect();
    oneroster(&src, "2026-02-10", &fifth);
    for _ in 0..2 {
        let err = execute(&RunContext::new(pl.clone()), Stage::All)
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("elevliste_vgs: lista til fylket ville gå frå 12 til 0 rader"),
            "{err}"
        );
        assert_eq!(
            versions(&pl, &["elevliste_vgs"]).await,
            list_version,
            "the county reads the old list"
        );
    }
    let mut ctx = RunContext::new(pl.clone());
    ctx.accept_mass_change = true;
    execute(&ctx, Stage::All).await.unwrap();
    assert_eq!(count(&pl, "SELECT count(*) FROM elevliste_vgs").await, 0);
}

/// Runs `elevflyt run` on the pipeline in `dir`, paused at `point` until the test lets it go
/// (`ELEVFLYT_PAUSE_AT`), doing `meanwhile` while it waits; its exit code and stderr.
fn run_paused(dir: &std::path::Path, point: &str, meanwhile: impl FnOnce()) -> (i32, String) {
    let go = dir.join(format!("go-{point}"));
    let pipeline = dir.join("pipeline.toml");
    let mut child = elevflyt(&["run", pipeline.to_str().unwrap()])
        .env("ELEVFLYT_PAUSE_AT", format!("{point}:{}", go.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let paused = std::path::PathBuf::from(format!("{}.paused", go.display()));
    let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !paused.exists() {
        if child.try_wait().unwrap().is_some() || std::time::Instant::now() > until {
            let out = child.wait_with_output().unwrap();
            panic!(
                "the run did not pause at {point}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    meanwhile();
    std::fs::write(&go, b"").unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (out.status.code().unwrap_or(-1), stderr)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_export_cut_short_while_a_run_reads_it_stops_the_run_and_the_next_run_finishes() {
    // An export of a megabyte or more is read mapped (docs/ARCHITECTURE.md, "Reading local
    // files"); its producer starts writing it again, cutting it short, while a run uses it.
    let (dir, src) = setup();
    let pl = pipeline(dir.path(), &[("vigilo", "oneroster-json", &src)], "");
    let export = oneroster(&src, "2026-01-10", &pupils(3000, "46591"));
    let whole = std::fs::read(&export).unwrap();
    assert!(whole.len() > 1 << 20, "{} bytes", whole.len());
    let cut = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&export)
            .unwrap()
            .set_len(40_000)
            .unwrap()
    };
    let mut tables = vec!["raw_vigilo"];
    tables.extend(DATA_TABLES);
    // Cut while it is parsed: skipped as a file still being written, for the next run.
    let (code, stderr) = run_paused(dir.path(), "after-parse", cut);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("the file changed while it was read (still being written?): skipped"),
        "{stderr}"
    );
    assert!(
        versions(&pl, &tables)
            .await
            .iter()
            .all(|(_, v)| v.is_none()),
        "nothing written"
    );

    // Whole again; cut after raw's files were written, before they are committed: the run
    // stops, nothing is committed.
    std::fs::write(&export, &whole).unwrap();
    let (code, stderr) = run_paused(dir.path(), "before-raw-commit", cut);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr
            .contains("source file `vigilo/export-2026-01-10.json` changed while this run used it")
            && stderr.contains("nothing of this run was committed"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("SIGBUS"),
        "{stderr}"
    );
    // (raw may have been created, empty: its version 0.)
    assert!(
        versions(&pl, &tables)
            .await
            .iter()
            .all(|(t, v)| v.is_none() || (t == "raw_vigilo" && *v == Some(0))),
        "nothing committed"
    );

    // Whole again; cut after raw's commit: raw has the export as it was read, nothing else is
    // written.
    std::fs::write(&export, &whole).unwrap();
    let (code, stderr) = run_paused(dir.path(), "after-raw", cut);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("changed while this run used it")
            && stderr.contains("raw has it as it was when read"),
        "{stderr}"
    );
    assert_eq!(
        count(
            &pl,
            "SELECT count(*) FROM raw_vigilo WHERE entitet = 'users'"
        )
        .await,
        3000
    );
    assert!(
        versions(&pl, DATA_TABLES)
            .await
            .iter()
            .all(|(_, v)| v.is_none()),
        "nothing published"
    );

    // The producer finishes the file: the next run publishes the snapshot raw holds.
    std::fs::write(&export, &whole).unwrap();
    let out = elevflyt(&["run", dir.path().join("pipeline.toml").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        count(&pl, "SELECT count(*) FROM elev WHERE is_current").await,
        3000
    );
    assert_eq!(
        count(
            &pl,
            "SELECT count(*) FROM raw_vigilo WHERE entitet = 'users'"
        )
        .await,
        3000
    );
}
