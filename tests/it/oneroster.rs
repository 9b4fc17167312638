//! Small OneRoster exports written by the test: status handling and the 1.2 shape.

use serde_json::json;

use crate::common::*;
use elevflyt::run::Stage;

fn user(id: &str, fnr: &str, family: &str, status: &str, v12: bool) -> serde_json::Value {
    let mut u = json!({"sourcedId": id, "status": status, "givenName": "Test", "familyName": family,
        "identifier": fnr, "dateLastModified": "2026-03-01T00:00:00Z"});
    if v12 {
        u["roles"] =
            json!([{"roleType": "primary", "role": "student", "org": {"sourcedId": "s1"}}]);
    } else {
        u["role"] = json!("student");
    }
    u
}

fn write_snapshot(dir: &std::path::Path, date: &str, users: Vec<serde_json::Value>) {
    let enrollments: Vec<_> = users
        .iter()
        .map(|u| json!({"sourcedId": format!("e-{}", u["sourcedId"].as_str().unwrap()), "status": "active",
            "user": {"sourcedId": u["sourcedId"]}, "class": {"sourcedId": "c1"}, "school": {"sourcedId": "s1"}, "role": "student"}))
        .collect();
    let doc = json!({
        "orgs": [{"sourcedId": "s1", "status": "active", "name": "Testskule", "type": "school", "identifier": "974760673",
                  "metadata": {"skolenummer": "46599"}}],
        "classes": [{"sourcedId": "c1", "status": "active", "title": "5B", "classType": "homeroom", "grades": ["05"],
                     "school": {"sourcedId": "s1"}, "terms": [{"sourcedId": "y"}]}],
        "academicSessions": [{"sourcedId": "y", "status": "active", "title": "2025/2026", "type": "schoolYear", "schoolYear": "2026"}],
        "users": users,
        "enrollments": enrollments,
    });
    std::fs::write(
        dir.join(format!("export-{date}.json")),
        serde_json::to_vec_pretty(&doc).unwrap(),
    )
    .unwrap();
}

// Tenor synthetic numbers with valid control digits (generated for these tests).
const FNR_A: &str = "06831975901";
const FNR_B: &str = "19871374808";

#[tokio::test(flavor = "multi_thread")]
async fn tobedeleted_closes_and_1_2_users_are_read() {
    let dir = tempdir();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    write_snapshot(
        &src,
        "2026-03-01",
        vec![
            user("a", FNR_A, "Aa", "active", false),
            user("b", FNR_B, "Bb", "active", true),
        ],
    );
    let f = pipeline_file(dir.path(), "p.toml", "[pipeline]\nname = \"t\"\nkommunenummer = \"4601\"\nwarehouse = \"lake\"\ncatalog = \"c\"\nschema = \"s\"\n\n[[source]]\nname = \"vigilo\"\nformat = \"oneroster-json\"\nlocation = \"src\"\n\n[quality]\nallow_synthetic_fnr = true\n");
    let p = elevflyt::config::Pipeline::load(&f, None).unwrap();
    run(&p, Stage::All).await.unwrap();
    let got = rows(&p, "SELECT e.system_id, ef.skolenummer, ef.klasse, ef.trinn, ef.skolear FROM elev e JOIN elevforhold ef ON ef.elev_id = e.id ORDER BY 1").await;
    assert_eq!(
        got,
        [
            ["a", "46599", "5B", "5", "20252026"],
            ["b", "46599", "5B", "5", "20252026"]
        ]
    );

    // Next export: b is marked tobedeleted (still present in the file).
    write_snapshot(
        &src,
        "2026-03-08",
        vec![
            user("a", FNR_A, "Aa", "active", false),
            user("b", FNR_B, "Bb", "tobedeleted", true),
        ],
    );
    run(&p, Stage::All).await.unwrap();
    let got = rows(&p, "SELECT system_id, valid_to FROM elev ORDER BY 1").await;
    assert_eq!(got[0], ["a", ""]);
    assert_eq!(got[1][0], "b");
    assert!(got[1][1].starts_with("2026-03-08"), "{:?}", got[1]);
    assert_eq!(
        count(&p, "SELECT count(*) FROM elevforhold WHERE is_current").await,
        1
    );
}

#[test]
fn dry_run_writes_nothing() {
    let dir = tempdir();
    let out = crate::common::elevflyt(&[])
        .args([
            "run",
            repo().join("pipelines/voss.toml").to_str().unwrap(),
            "--dry-run",
            "--warehouse",
            &warehouse(&dir),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["files_read"].as_array().unwrap().len(), 3);
    assert!(
        !std::path::Path::new(&warehouse(&dir)).exists(),
        "the warehouse was not created"
    );
}
