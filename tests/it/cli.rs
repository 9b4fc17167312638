//! The binary: exit codes, logs (text and JSON) without personal data, configuration errors.

use crate::common::*;

/// Every fødselsnummer (as delivered and normalised) and name in the sample inputs.
fn personal_data() -> Vec<String> {
    let mut out = Vec::new();
    for dir in ["sample_data/bergen/vigilo", "sample_data/voss/vigo"] {
        for f in std::fs::read_dir(repo().join(dir)).unwrap() {
            let bytes = std::fs::read(f.unwrap().path()).unwrap();
            let text: String = bytes
                .iter()
                .map(|&b| if b.is_ascii() { b as char } else { ' ' })
                .collect();
            for tok in text.split(|c: char| !c.is_ascii_alphanumeric() && c != ' ') {
                let digits: String = tok.chars().filter(|c| !c.is_whitespace()).collect();
                if (digits.len() == 10 || digits.len() == 11)
                    && digits.bytes().all(|b| b.is_ascii_digit())
                {
                    out.push(digits);
                }
            }
        }
    }
    // Family names from the generator (ASCII ones, to match in any encoding).
    for n in [
        "Fjellheim",
        "Nordbo",
        "Strandvik",
        "Haugland",
        "Myrvang",
        "Skogrand",
        "Kvamsdal",
        "Bergslien",
        "Tveitane",
        "Hammersvoll",
    ] {
        out.push(n.to_string());
    }
    out
}

#[test]
fn runs_log_json_and_text_without_personal_data() {
    let pii = personal_data();
    assert!(pii.len() > 300, "found {} identifiers", pii.len());
    for (pipeline, format) in [
        ("bergen.toml", "json"),
        ("voss.toml", "text"),
        ("bergen.toml", "text"),
        ("voss.toml", "json"),
    ] {
        // A fresh warehouse for each, so that every combination really processes the files.
        let dir = tempdir();
        let out = elevflyt(&[])
            .args([
                "run",
                repo().join("pipelines").join(pipeline).to_str().unwrap(),
            ])
            .args([
                "--warehouse",
                &warehouse(&dir),
                "--log-format",
                format,
                "--log-level",
                "trace",
            ])
            // Every crate at TRACE, as `--help` suggests for debugging: dependencies would
            // log Delta file statistics and Parquet page filters (min/max of every column).
            .env("RUST_LOG", "trace")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{pipeline}: {stderr}");
        if format == "json" {
            let elevflyt_lines: Vec<_> =
                stderr.lines().filter(|l| l.contains("elevflyt")).collect();
            assert!(!elevflyt_lines.is_empty());
            for l in elevflyt_lines {
                serde_json::from_str::<serde_json::Value>(l)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            }
        }
        for p in &pii {
            assert!(
                !stderr.contains(p.as_str()),
                "{pipeline}: log shows personal data {}…",
                &p[..4]
            );
            assert!(
                !stdout.contains(p.as_str()),
                "{pipeline}: output shows personal data {}…",
                &p[..4]
            );
        }
        // The Delta log's file statistics carry no personal column.
        let mut logs = String::new();
        let mut dirs = vec![dir.path().join("lake")];
        while let Some(d) = dirs.pop() {
            for f in std::fs::read_dir(&d).unwrap() {
                let f = f.unwrap().path();
                if f.is_dir() {
                    dirs.push(f);
                } else if f.extension().is_some_and(|e| e == "json")
                    && f.parent().is_some_and(|p| p.ends_with("_delta_log"))
                {
                    logs.push_str(&std::fs::read_to_string(&f).unwrap());
                }
            }
        }
        assert!(logs.contains("\"stats\""), "the log has file statistics");
        assert!(logs.contains("dataSkippingStatsColumns"));
        for p in &pii {
            assert!(
                !logs.contains(p.as_str()),
                "{pipeline}: the Delta log shows personal data {}…",
                &p[..4]
            );
        }
        // The report in every format, and the avvik, kvalitet and kjoring tables, carry none either.
        let file = repo().join("pipelines").join(pipeline);
        let mut texts = Vec::new();
        for format in ["text", "json", "html"] {
            let out = elevflyt(&[])
                .args([
                    "report",
                    file.to_str().unwrap(),
                    "--warehouse",
                    &warehouse(&dir),
                    "--format",
                    format,
                ])
                .output()
                .unwrap();
            assert!(out.status.success());
            texts.push(String::from_utf8_lossy(&out.stdout).to_string());
        }
        for table in ["avvik", "kvalitet", "kjoring"] {
            let out = elevflyt(&[])
                .args([
                    "sql",
                    file.to_str().unwrap(),
                    &format!("SELECT * FROM {table}"),
                    "--format",
                    "csv",
                    "--warehouse",
                    &warehouse(&dir),
                ])
                .output()
                .unwrap();
            texts.push(String::from_utf8_lossy(&out.stdout).to_string());
        }
        assert!(texts[1].contains("elever_per_klasse"));
        for text in &texts {
            for p in &pii {
                assert!(
                    !text.contains(p.as_str()),
                    "{pipeline}: report or table shows personal data {}…",
                    &p[..4]
                );
            }
        }
    }
}

#[test]
fn exit_codes_and_configuration_errors() {
    let dir = tempdir();
    // Unknown key → 2, naming the key.
    let bad = pipeline_file(dir.path(), "bad.toml", "[pipeline]\nname = \"x\"\nkommunenummer = \"4601\"\nwarehouse = \"w\"\ncatalog = \"c\"\nschema = \"s\"\nkatalog = \"c\"\n\n[[source]]\nname = \"a\"\nformat = \"vigo-csv\"\nlocation = \"x\"\n");
    let out = elevflyt(&[])
        .args(["run", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("katalog"));
    // Unknown format → 2.
    let body = std::fs::read_to_string(&bad)
        .unwrap()
        .replace("katalog = \"c\"\n", "")
        .replace("vigo-csv", "excel");
    let bad = pipeline_file(dir.path(), "bad2.toml", &body);
    let out = elevflyt(&[])
        .args(["run", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains("`excel`")
            && err.contains("oneroster-json, oneroster-rest, oneroster-csv, fint, vigo-csv"),
        "the error lists the registered formats: {err}"
    );
    // `validate` says the same without opening any storage, and passes a good file.
    let out = elevflyt(&["validate", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`excel`"));
    let good = repo().join("pipelines/voss.toml");
    let out = elevflyt(&[
        "validate",
        good.to_str().unwrap(),
        "--warehouse",
        "s3://no-such-bucket/lake",
    ])
    .output()
    .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.starts_with("ok:") && said.contains("vigo (vigo-csv)"),
        "{said}"
    );
    // --help lists the formats from the registry.
    let help = elevflyt(&["generate", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    assert!(
        help.contains("oneroster-json") && help.contains("vigo-csv"),
        "{help}"
    );
    // Missing file and bad usage → 2.
    assert_eq!(
        elevflyt(&[])
            .args(["run", "nope.toml"])
            .output()
            .unwrap()
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        elevflyt(&[])
            .args(["frobnicate"])
            .output()
            .unwrap()
            .status
            .code(),
        Some(2)
    );
    let p = repo().join("pipelines/bergen.toml");
    let out = elevflyt(&[])
        .args([
            "run",
            p.to_str().unwrap(),
            "--as-of",
            "15.01.2026",
            "--warehouse",
            &warehouse(&dir),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // A fail rule → 1.
    let body = std::fs::read_to_string(repo().join("pipelines/voss.toml"))
        .unwrap()
        .replace("../sample_data", "{repo}/sample_data")
        + "fnr_ugyldig = \"fail\"\n";
    let f = pipeline_file(dir.path(), "voss.toml", &body);
    let out = elevflyt(&[])
        .args(["run", f.to_str().unwrap(), "--warehouse", &warehouse(&dir)])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_broken_file_names_file_and_line_and_writes_nothing() {
    let dir = tempdir();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("users-2026-01-15.json"),
        "{\"users\": [\n{\"sourcedId\": \"a\"},\n{\"sourcedId\" \"b\"}\n]}",
    )
    .unwrap();
    let f = pipeline_file(dir.path(), "p.toml", "[pipeline]\nname = \"x\"\nkommunenummer = \"4601\"\nwarehouse = \"lake\"\ncatalog = \"c\"\nschema = \"s\"\n\n[[source]]\nname = \"vigilo\"\nformat = \"oneroster-json\"\nlocation = \"src\"\n");
    let out = elevflyt(&[])
        .args(["run", f.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("users-2026-01-15.json, line 3"), "{stderr}");
    assert!(
        !dir.path().join("lake/c/s/raw_vigilo").exists(),
        "no raw table was written"
    );
}

#[test]
fn rules_and_help() {
    let out = elevflyt(&[]).arg("rules").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for r in elevflyt::quality::rules::RULES {
        assert!(text.contains(r.name), "{}", r.name);
    }
    let out = elevflyt(&[]).args(["run", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--warehouse") && text.contains("--as-of") && text.contains("--dry-run"));
}

#[test]
fn sql_prints_csv_and_json() {
    let dir = tempdir();
    let p = repo().join("pipelines/voss.toml");
    let w = warehouse(&dir);
    assert!(elevflyt(&[])
        .args(["run", p.to_str().unwrap(), "--warehouse", &w])
        .output()
        .unwrap()
        .status
        .success());
    let out = elevflyt(&[])
        .args([
            "sql",
            p.to_str().unwrap(),
            "SELECT skolenummer, count(*) AS n FROM elevliste_vgs GROUP BY skolenummer ORDER BY 1",
            "--format",
            "csv",
            "--warehouse",
            &w,
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "skolenummer,n\n46520,24\n46521,18\n"
    );
    let out = elevflyt(&[])
        .args([
            "sql",
            p.to_str().unwrap(),
            "SELECT count(*) AS n FROM elev",
            "--format",
            "json",
            "--warehouse",
            &w,
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["n"], 43);
    // A value that a spreadsheet would run as a formula is written as text.
    let out = elevflyt(&[
        "sql",
        p.to_str().unwrap(),
        "SELECT '=HYPERLINK(\"http://x\")' AS elev_namn, -1 AS n",
        "--format",
        "csv",
        "--warehouse",
        &w,
    ])
    .output()
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "elev_namn,n\n\"'=HYPERLINK(\"\"http://x\"\")\",-1\n"
    );
}

/// A misspelt location is an error naming the source and the location (a scheduled job must not
/// succeed every night with no data), unless the source is optional; an Office lock file beside
/// the exports is skipped, not read as one.
#[test]
fn a_location_without_files_fails_unless_optional_and_lock_files_are_skipped() {
    let dir = tempdir();
    let body = "[pipeline]\nname = \"x\"\nkommunenummer = \"4601\"\nwarehouse = \"lake\"\ncatalog = \"c\"\nschema = \"s\"\n\n[[source]]\nname = \"vigo\"\nformat = \"vigo-csv\"\nlocation = \"elevlister\"\n";
    let f = pipeline_file(dir.path(), "p.toml", body);
    let out = elevflyt(&["run", f.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("source `vigo`: no files at") && stderr.contains("elevlister"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("no files at").count(),
        1,
        "said once: {stderr}"
    );

    let f = pipeline_file(dir.path(), "p.toml", &format!("{body}optional = true\n"));
    let out = elevflyt(&["run", f.to_str().unwrap()]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A list and the lock file a spreadsheet leaves beside it.
    let src = dir.path().join("elevlister");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::copy(
        repo().join("sample_data/voss/vigo/elevliste_46520_20261101.csv"),
        src.join("elevliste_46520_20261101.csv"),
    )
    .unwrap();
    std::fs::write(
        src.join("~$elevliste_46520_20261101.csv"),
        [0u8, 159, 146, 150],
    )
    .unwrap();
    let f = pipeline_file(
        dir.path(),
        "p.toml",
        &format!("{body}\n[quality]\nallow_synthetic_fnr = true\n"),
    );
    let out = elevflyt(&["run", f.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        summary["files_read"],
        serde_json::json!(["vigo/elevliste_46520_20261101.csv"])
    );
    assert!(stderr.contains("skipping an Office lock file"), "{stderr}");
}

/// A bad query is bad usage (exit 2), said once; with JSON logs stderr is JSON only. `check` on a
/// warehouse with no tables says there is nothing to check instead of "ok".
#[test]
fn sql_errors_exit_2_errors_are_said_once_and_check_needs_tables() {
    let dir = tempdir();
    let p = repo().join("pipelines/voss.toml");
    let w = warehouse(&dir);
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a = vec!["sql".to_string(), p.to_str().unwrap().into()];
        a.extend(extra.iter().map(|s| s.to_string()));
        a.extend(["--warehouse".to_string(), w.clone()]);
        a
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        elevflyt(&a).output().unwrap()
    };
    let out = run(args(&["SELECT * FROM no_such_table"]));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.matches("no_such_table").count(),
        1,
        "said once: {stderr}"
    );
    let out = run(args(&["SELEC 1"]));
    assert_eq!(out.status.code(), Some(2));
    let mut json = args(&["SELECT * FROM no_such_table"]);
    json.splice(0..0, ["--log-format".to_string(), "json".to_string()]);
    let out = run(json);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2));
    for line in stderr.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert_eq!(v["fields"]["exit_code"], 2, "{line}");
    }
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let out = elevflyt(&["check", p.to_str().unwrap(), "--warehouse", &w])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nothing to check"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ok:"));
}
