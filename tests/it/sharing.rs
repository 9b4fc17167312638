//! The county reads through `elevflyt serve` (Delta Sharing): a kommune with pupils bound for
//! two counties (Vestland 46 and Oslo 03), two deliveries, and what each county's admission
//! office, an attacker with a guessed or stolen URL, and the disclosure log see.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::StringArray;
use elevflyt::run::Stage;
use elevflyt::sharing::config::Sharing;
use reqwest::StatusCode;

use crate::common::{rows, run};
use crate::fixtures::{oneroster, p, pipeline, tenor, P};

/// Day 1: three 10th graders bound for Vestland, two for Oslo, and one 5th grader.
pub fn day1() -> Vec<P> {
    vec![
        p("a", &tenor(1, false), "Aas", "46501", "10A"),
        p("b", &tenor(2, false), "Berg", "46501", "10A"),
        p("c", &tenor(3, true), "Dahl", "46502", "10B"),
        p("o1", &tenor(4, false), "Oslo", "03501", "10A"),
        p("o2", &tenor(5, false), "Oslo", "03501", "10B"),
        p("y", &tenor(6, false), "Ung", "46501", "5A"),
    ]
}

/// Day 2, the corrections: `a` unchanged, `b` moved to 46502, `c`'s D-number replaced by a
/// fødselsnummer, a new pupil `n`; Oslo's `o2` left.
pub fn day2() -> Vec<P> {
    let mut d = day1();
    d[1].school = "46502".into();
    d[2].fnr = tenor(3, false);
    d.retain(|x| x.sid != "o2");
    d.push(p("n", &tenor(7, false), "Ny", "46501", "10A"));
    d
}

pub struct Story {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub pipeline: elevflyt::config::Pipeline,
    src: PathBuf,
}

pub async fn story() -> Story {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let src = root.join("src");
    oneroster(&src, "2026-01-15", &day1());
    let pipeline = pipeline(&root, &[("vigilo", "oneroster-json", &src)], "");
    run(&pipeline, Stage::All).await.unwrap();
    Story {
        _dir: dir,
        root,
        pipeline,
        src,
    }
}

impl Story {
    pub async fn day2(&self) {
        oneroster(&self.src, "2026-01-16", &day2());
        run(&self.pipeline, Stage::All).await.unwrap();
    }

    /// A sharing file over the story's pipeline: `vestland` sees fylke 46, `oslo` fylke 03, and
    /// `kommune` (unrestricted) also `elev`. `extra` goes at the end of the vestland recipient.
    pub fn sharing(&self, vestland_extra: &str) -> PathBuf {
        let body = format!(
            r#"
[server]
listen = "127.0.0.1:0"
url_ttl_minutes = 5

[[share]]
name = "inntak"
[[share.schema]]
pipeline = "pipeline.toml"
tables = ["elevliste_vgs"]
history = true

[[share]]
name = "intern"
[[share.schema]]
name = "heile"
pipeline = "pipeline.toml"
tables = ["elevliste_vgs", "elev"]

[[recipient]]
name = "oslo"
shares = ["inntak"]
rows = {{ fylkesnummer = "03" }}

[[recipient]]
name = "kommune"
shares = ["intern"]

[[recipient]]
name = "vestland"
shares = ["inntak"]
rows = {{ fylkesnummer = "46" }}
{vestland_extra}
"#
        );
        let path = self.root.join("sharing.toml");
        std::fs::write(&path, body).unwrap();
        path
    }
}

/// A server on 127.0.0.1:0 over `sharing`, with a token for each recipient.
pub struct Served {
    running: Option<elevflyt::sharing::Running>,
    pub http: reqwest::Client,
    pub tokens: std::collections::HashMap<String, String>,
    path: PathBuf,
}

impl Served {
    pub async fn start(path: &Path) -> Served {
        let sharing = Sharing::load(path).unwrap();
        let mut tokens = std::collections::HashMap::new();
        for r in ["vestland", "oslo", "kommune"] {
            let profile = path.with_file_name(format!("{r}.share"));
            let t = elevflyt::sharing::tokens::mint(&Sharing::load(path).unwrap(), r, 30, &profile)
                .unwrap();
            let json: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&profile).unwrap()).unwrap();
            assert_eq!(json["bearerToken"], t.as_str());
            assert_eq!(json["shareCredentialsVersion"], 1);
            tokens.insert(r.to_string(), t);
        }
        let text = std::fs::read_to_string(path).unwrap();
        for t in tokens.values() {
            assert!(
                !text.contains(t.as_str()),
                "only a hash of a token is stored"
            );
        }
        let listen = sharing.listen;
        let running = elevflyt::sharing::start(Sharing::load(path).unwrap(), listen)
            .await
            .unwrap();
        Served {
            running: Some(running),
            http: reqwest::Client::new(),
            tokens,
            path: path.to_path_buf(),
        }
    }

    pub fn server(&self) -> &Arc<elevflyt::sharing::Server> {
        &self.running.as_ref().unwrap().server
    }

    pub fn url(&self, route: &str) -> String {
        format!("{}{route}", self.running.as_ref().unwrap().endpoint)
    }

    pub async fn get(&self, who: &str, route: &str) -> reqwest::Response {
        let mut r = self.http.get(self.url(route));
        if let Some(t) = self.tokens.get(who) {
            r = r.bearer_auth(t);
        }
        r.send().await.unwrap()
    }

    pub async fn query(
        &self,
        who: &str,
        table: &str,
        body: serde_json::Value,
    ) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/shares/inntak/schemas/c/tables/{table}/query")))
            .bearer_auth(&self.tokens[who])
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }
}

/// The NDJSON lines of a response.
pub async fn lines(r: reqwest::Response) -> Vec<serde_json::Value> {
    let text = r.text().await.unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

/// (action, fylkesnummer, url) of every file line.
pub fn files(lines: &[serde_json::Value]) -> Vec<(String, String, String)> {
    lines
        .iter()
        .skip(2)
        .map(|l| {
            let (kind, f) = l.as_object().unwrap().iter().next().unwrap();
            (
                kind.clone(),
                f["partitionValues"]["fylkesnummer"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                f["url"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The fødselsnummer (and change type, for change files) in a Parquet file fetched by URL.
async fn fetch_rows(http: &reqwest::Client, url: &str) -> Vec<(String, String)> {
    let bytes = http.get(url).send().await.unwrap().bytes().await.unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    let mut out = Vec::new();
    for b in reader {
        let b = b.unwrap();
        let fnr = b.column_by_name("fodselsnummer").unwrap();
        let fnr = arrow::compute::cast(fnr, &arrow::datatypes::DataType::Utf8).unwrap();
        let fnr = fnr.as_any().downcast_ref::<StringArray>().unwrap();
        let kind = b
            .column_by_name("_change_type")
            .map(|c| arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8).unwrap());
        for i in 0..b.num_rows() {
            let k = kind
                .as_ref()
                .map(|k| {
                    k.as_any()
                        .downcast_ref::<StringArray>()
                        .unwrap()
                        .value(i)
                        .to_string()
                })
                .unwrap_or_default();
            out.push((k, fnr.value(i).to_string()));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn each_county_reads_only_its_own_pupils_in_every_route_and_version() {
    let s = story().await;
    let served = Served::start(&s.sharing("")).await;

    // Listings: compact JSON on one line; a recipient sees its own share only.
    let r = served.get("vestland", "/shares").await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert_eq!(text.lines().count(), 1);
    let shares: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(shares["items"].as_array().unwrap().len(), 1);
    assert_eq!(shares["items"][0]["name"], "inntak");
    let all: serde_json::Value = served
        .get("vestland", "/shares/inntak/all-tables")
        .await
        .text()
        .await
        .map(|t| serde_json::from_str::<serde_json::Value>(&t).unwrap())
        .unwrap();
    assert_eq!(all["items"][0]["name"], "elevliste_vgs");
    assert_eq!(all["items"][0]["schema"], "c");
    assert_eq!(all["items"][0]["share"], "inntak");
    let schemas: serde_json::Value = served
        .get("vestland", "/shares/inntak/schemas")
        .await
        .text()
        .await
        .map(|t| serde_json::from_str::<serde_json::Value>(&t).unwrap())
        .unwrap();
    assert_eq!(schemas["items"][0]["name"], "c");
    // Paging: one item per page, then the next page, then a bad token.
    let p1: serde_json::Value = served
        .get("kommune", "/shares/intern/all-tables?maxResults=1")
        .await
        .text()
        .await
        .map(|t| serde_json::from_str::<serde_json::Value>(&t).unwrap())
        .unwrap();
    assert_eq!(p1["items"].as_array().unwrap().len(), 1);
    let next = p1["nextPageToken"].as_str().unwrap();
    let p2: serde_json::Value = served
        .get(
            "kommune",
            &format!("/shares/intern/all-tables?maxResults=1&pageToken={next}"),
        )
        .await
        .text()
        .await
        .map(|t| serde_json::from_str::<serde_json::Value>(&t).unwrap())
        .unwrap();
    assert_eq!(p2["items"][0]["name"], "elev");
    assert_eq!(
        served
            .get("kommune", "/shares/intern/all-tables?pageToken=zz")
            .await
            .status(),
        400
    );

    // A share not granted, and data minimisation: the county has no `elev`.
    let r = served.get("vestland", "/shares/intern/all-tables").await;
    assert_eq!(r.status(), 404);
    let e: serde_json::Value = r
        .text()
        .await
        .map(|t| serde_json::from_str::<serde_json::Value>(&t).unwrap())
        .unwrap();
    assert_eq!(e["errorCode"], "RESOURCE_DOES_NOT_EXIST");
    assert_eq!(
        served
            .get("vestland", "/shares/inntak/schemas/c/tables/elev/metadata")
            .await
            .status(),
        404
    );
    assert_eq!(
        served
            .get("vestland", "/shares/nope/schemas")
            .await
            .status(),
        404
    );

    // Version and metadata.
    let r = served
        .get(
            "vestland",
            "/shares/inntak/schemas/c/tables/elevliste_vgs/version",
        )
        .await;
    assert_eq!(r.status(), 200);
    let v1: i64 = r.headers()["delta-table-version"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let m = lines(
        served
            .get(
                "vestland",
                "/shares/inntak/schemas/c/tables/elevliste_vgs/metadata",
            )
            .await,
    )
    .await;
    assert_eq!(
        m[0],
        serde_json::json!({"protocol": {"minReaderVersion": 1}})
    );
    assert_eq!(
        m[1]["metaData"]["partitionColumns"],
        serde_json::json!(["fylkesnummer"])
    );
    assert_eq!(
        m[1]["metaData"]["configuration"],
        serde_json::json!({"enableChangeDataFeed": "true"})
    );
    assert!(
        m[1]["metaData"].get("numFiles").is_none(),
        "no whole-table sizes for a restricted recipient"
    );
    assert!(
        !m[1]["metaData"]["configuration"]
            .to_string()
            .contains("dataSkipping"),
        "internal properties stay private"
    );

    // Query: only Vestland's files, and their rows are exactly Vestland's pupils.
    let r = served
        .query("vestland", "elevliste_vgs", serde_json::json!({}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["delta-table-version"].to_str().unwrap(),
        v1.to_string()
    );
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/x-ndjson; charset=utf-8"
    );
    let q = lines(r).await;
    let f = files(&q);
    assert!(!f.is_empty());
    assert!(
        f.iter().all(|(k, fylke, _)| k == "file" && fylke == "46"),
        "{f:?}"
    );
    let mut seen = Vec::new();
    for (_, _, url) in &f {
        seen.extend(
            fetch_rows(&served.http, url)
                .await
                .into_iter()
                .map(|(_, fnr)| fnr),
        );
    }
    seen.sort();
    let mut expected = vec![tenor(1, false), tenor(2, false), tenor(3, true)];
    expected.sort();
    assert_eq!(
        seen, expected,
        "Vestland gets its three 10th graders, nobody else"
    );
    let oslo = files(
        &lines(
            served
                .query("oslo", "elevliste_vgs", serde_json::json!({}))
                .await,
        )
        .await,
    );
    assert!(!oslo.is_empty() && oslo.iter().all(|(_, fylke, _)| fylke == "03"));

    // A hint may narrow, never widen: asking for Oslo's partition gives Vestland nothing.
    let hint = serde_json::json!({"op": "equal", "children": [
        {"op": "column", "name": "fylkesnummer", "valueType": "string"},
        {"op": "literal", "value": "03", "valueType": "string"}]});
    let widened = lines(
        served
            .query(
                "vestland",
                "elevliste_vgs",
                serde_json::json!({"jsonPredicateHints": hint.to_string()}),
            )
            .await,
    )
    .await;
    assert_eq!(widened.len(), 2, "protocol and metadata, no file");
    let broken = lines(
        served
            .query(
                "vestland",
                "elevliste_vgs",
                serde_json::json!({"jsonPredicateHints": "{not json"}),
            )
            .await,
    )
    .await;
    assert!(
        files(&broken).iter().all(|(_, fylke, _)| fylke == "46"),
        "a bad hint drops the hint, not the restriction"
    );

    // Malformed and unsupported requests are 400, never 5xx.
    let r = served
        .http
        .post(served.url("/shares/inntak/schemas/c/tables/elevliste_vgs/query"))
        .bearer_auth(&served.tokens["vestland"])
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&r.text().await.unwrap()).unwrap()["errorCode"],
        "MALFORMED_REQUEST"
    );
    assert_eq!(
        served
            .query(
                "vestland",
                "elevliste_vgs",
                serde_json::json!({"version": 99})
            )
            .await
            .status(),
        400
    );
    assert_eq!(
        served
            .query(
                "vestland",
                "elevliste_vgs",
                serde_json::json!({"version": 1, "timestamp": "2026-01-01T00:00:00Z"})
            )
            .await
            .status(),
        400
    );
    assert_eq!(
        served
            .query(
                "vestland",
                "elevliste_vgs",
                serde_json::json!({"startingVersion": 1})
            )
            .await
            .status(),
        400
    );
    let delta_only = served
        .http
        .get(served.url("/shares/inntak/schemas/c/tables/elevliste_vgs/metadata"))
        .bearer_auth(&served.tokens["vestland"])
        .header("delta-sharing-capabilities", "responseformat=delta")
        .send()
        .await
        .unwrap();
    assert_eq!(delta_only.status(), 400);
    let huge = served
        .http
        .post(served.url("/shares/inntak/schemas/c/tables/elevliste_vgs/query"))
        .bearer_auth(&served.tokens["vestland"])
        .header("content-type", "application/json")
        .body(format!(
            "{{\"jsonPredicateHints\": \"{}\"}}",
            "x".repeat(100_000)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413, "a request body over the limit");
    let e: serde_json::Value = serde_json::from_str(&huge.text().await.unwrap()).unwrap();
    assert_eq!(
        e["errorCode"], "INVALID_PARAMETER_VALUE",
        "the framework's refusals in the protocol's shape too"
    );
    let r = served
        .get(
            "vestland",
            "/shares/inntak/schemas/c/tables/elevliste_vgs/changes?startingVersion=abc",
        )
        .await;
    assert_eq!(r.status(), 400);
    let e: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert!(
        e["message"].as_str().unwrap().contains("startingVersion"),
        "{e}"
    );

    // The second delivery: the county's changes are exactly the corrections.
    s.day2().await;
    let r = served
        .get(
            "vestland",
            "/shares/inntak/schemas/c/tables/elevliste_vgs/version",
        )
        .await;
    let v2: i64 = r.headers()["delta-table-version"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(v2 > v1);
    let r = served
        .get(
            "vestland",
            &format!(
                "/shares/inntak/schemas/c/tables/elevliste_vgs/changes?startingVersion={}",
                v1 + 1
            ),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["delta-table-version"].to_str().unwrap(),
        (v1 + 1).to_string()
    );
    let ch = lines(r).await;
    let cf = files(&ch);
    assert!(
        !cf.is_empty() && cf.iter().all(|(k, fylke, _)| k == "cdf" && fylke == "46"),
        "{cf:?}"
    );
    for l in &ch[2..] {
        assert!(
            l["cdf"]["version"].is_i64() && l["cdf"]["timestamp"].is_i64(),
            "{l}"
        );
    }
    let mut changes = Vec::new();
    for (_, _, url) in &cf {
        changes.extend(fetch_rows(&served.http, url).await);
    }
    changes.sort();
    let mut want = vec![
        ("insert".to_string(), tenor(2, false)), // moved: new school
        ("delete".to_string(), tenor(2, false)),
        ("insert".to_string(), tenor(3, false)), // fødselsnummer fixed
        ("delete".to_string(), tenor(3, true)),
        ("insert".to_string(), tenor(7, false)), // new pupil
    ];
    want.sort();
    assert_eq!(
        changes, want,
        "a pupil whose row did not change (a) is not in the changes"
    );
    let oslo_changes = files(
        &lines(
            served
                .get(
                    "oslo",
                    &format!(
                        "/shares/inntak/schemas/c/tables/elevliste_vgs/changes?startingVersion={}",
                        v1 + 1
                    ),
                )
                .await,
        )
        .await,
    );
    assert!(oslo_changes.iter().all(|(_, fylke, _)| fylke == "03") && !oslo_changes.is_empty());
    let mut oslo_rows = Vec::new();
    for (_, _, url) in &oslo_changes {
        oslo_rows.extend(fetch_rows(&served.http, url).await);
    }
    assert_eq!(
        oslo_rows,
        vec![("delete".to_string(), tenor(5, false))],
        "Oslo's leaver, and only that"
    );

    // Time travel: version 1 as it was, still only Vestland's files.
    let old = files(
        &lines(
            served
                .query(
                    "vestland",
                    "elevliste_vgs",
                    serde_json::json!({"version": v1}),
                )
                .await,
        )
        .await,
    );
    let mut old_rows: Vec<String> = Vec::new();
    for (_, fylke, url) in &old {
        assert_eq!(fylke, "46");
        old_rows.extend(
            fetch_rows(&served.http, url)
                .await
                .into_iter()
                .map(|(_, f)| f),
        );
    }
    old_rows.sort();
    assert_eq!(old_rows, expected);
    // Changes over a range that starts after the newest version, or ends before it starts.
    assert_eq!(
        served
            .get(
                "vestland",
                &format!(
                    "/shares/inntak/schemas/c/tables/elevliste_vgs/changes?startingVersion={}",
                    v2 + 5
                )
            )
            .await
            .status(),
        400
    );
    assert_eq!(
        served
            .get(
                "vestland",
                "/shares/inntak/schemas/c/tables/elevliste_vgs/changes"
            )
            .await
            .status(),
        400
    );
    // A share without history has no time travel and no changes.
    assert_eq!(
        served
            .get(
                "kommune",
                "/shares/intern/schemas/heile/tables/elevliste_vgs/changes?startingVersion=1"
            )
            .await
            .status(),
        400
    );

    // File URLs: Range, HEAD, reuse; a tampered, guessed or expired URL is 403.
    let url = &f[0].2;
    let head = served.http.head(url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    let size: usize = head.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(head.headers()["accept-ranges"], "bytes");
    let whole = served
        .http
        .get(url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(whole.len(), size);
    let part = served
        .http
        .get(url)
        .header("Range", "bytes=4-11")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"].to_str().unwrap(),
        format!("bytes 4-11/{size}")
    );
    assert_eq!(&part.bytes().await.unwrap()[..], &whole[4..12]);
    let tail = served
        .http
        .get(url)
        .header("Range", "bytes=-8")
        .send()
        .await
        .unwrap();
    assert_eq!(&tail.bytes().await.unwrap()[..], &whole[size - 8..]);
    assert_eq!(
        served
            .http
            .get(url)
            .header("Range", format!("bytes={size}-"))
            .send()
            .await
            .unwrap()
            .status(),
        416
    );
    // Swap Vestland's file for Oslo's in the payload, keep the signature.
    let oslo_url = &oslo[0].2;
    let token_of = |u: &str| {
        u.split("/files/")
            .nth(1)
            .unwrap()
            .split('?')
            .next()
            .unwrap()
            .to_string()
    };
    let (vest_payload, vest_sig) = token_of(url)
        .split_once('.')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .unwrap();
    let (oslo_payload, _) = token_of(oslo_url)
        .split_once('.')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .unwrap();
    let tampered = url.replace(&vest_payload, &oslo_payload);
    assert_ne!(&tampered, url);
    assert_eq!(
        served.http.get(&tampered).send().await.unwrap().status(),
        403
    );
    let forged = url.replace(&vest_sig, &"A".repeat(vest_sig.len()));
    assert_eq!(served.http.get(&forged).send().await.unwrap().status(), 403);
    assert_eq!(
        served
            .http
            .get(served.url("/files/guess"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let stolen = served
        .http
        .get(url)
        .bearer_auth(&served.tokens["oslo"])
        .send()
        .await
        .unwrap();
    assert_eq!(
        stolen.status(),
        200,
        "a URL is bound to its recipient's file, whoever holds it, until it expires"
    );
    served
        .server()
        .set_clock(Some(chrono::Utc::now() + chrono::Duration::minutes(6)));
    let expired = served.http.get(url).send().await.unwrap();
    assert_eq!(expired.status(), 403);
    assert!(expired.text().await.unwrap().contains("expired"));
    served.server().set_clock(None);

    // The disclosure log: every query, changes and download, with recipient and version; no
    // fødselsnummer anywhere in it.
    served.server().flush_disclosures().await;
    let log = rows(&s.pipeline, "SELECT mottakar, operasjon, deling, tabell, CAST(versjon AS STRING), CAST(filer AS STRING), CAST(rader AS STRING), avgrensing, request_id, CAST(fra_versjon AS STRING) FROM utlevering ORDER BY tid").await;
    let vest_queries: Vec<_> = log
        .iter()
        .filter(|r| r[0] == "vestland" && r[1] == "query")
        .collect();
    assert!(vest_queries.len() >= 3);
    assert_eq!(vest_queries[0][2], "inntak");
    assert_eq!(vest_queries[0][3], "elevliste_vgs");
    assert_eq!(vest_queries[0][4], v1.to_string());
    assert_eq!(vest_queries[0][6], "3", "three pupils disclosed");
    assert_eq!(vest_queries[0][7], "fylkesnummer=46");
    assert!(!vest_queries[0][8].is_empty(), "request id");
    let vest_changes: Vec<_> = log
        .iter()
        .filter(|r| r[0] == "vestland" && r[1] == "changes")
        .collect();
    assert_eq!(vest_changes.len(), 1);
    assert_eq!(vest_changes[0][9], (v1 + 1).to_string());
    assert_eq!(vest_changes[0][4], v2.to_string());
    assert_eq!(vest_changes[0][6], "5", "the five change rows");
    assert!(log.iter().any(|r| r[0] == "vestland" && r[1] == "download"));
    assert!(log
        .iter()
        .any(|r| r[0] == "oslo" && r[1] == "query" && r[7] == "fylkesnummer=03"));
    let everything = log.concat().join(" ");
    for n in 1..=7 {
        for dnr in [false, true] {
            assert!(
                !everything.contains(&tenor(n, dnr)),
                "no fødselsnummer in utlevering"
            );
        }
    }
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_wrong_expired_or_revoked_token_gets_401_on_every_route() {
    let s = story().await;
    let served = Served::start(&s.sharing("")).await;
    let routes = [
        ("GET", "/shares"),
        ("GET", "/shares/inntak"),
        ("GET", "/shares/inntak/schemas"),
        ("GET", "/shares/inntak/schemas/c/tables"),
        ("GET", "/shares/inntak/all-tables"),
        (
            "GET",
            "/shares/inntak/schemas/c/tables/elevliste_vgs/version",
        ),
        (
            "GET",
            "/shares/inntak/schemas/c/tables/elevliste_vgs/metadata",
        ),
        (
            "POST",
            "/shares/inntak/schemas/c/tables/elevliste_vgs/query",
        ),
        (
            "GET",
            "/shares/inntak/schemas/c/tables/elevliste_vgs/changes?startingVersion=1",
        ),
        ("GET", "/no/such/route"),
        ("DELETE", "/shares"),
    ];
    let check = |token: Option<String>, why: &'static str| {
        let served = &served;
        async move {
            for (method, route) in routes {
                let mut r = served
                    .http
                    .request(method.parse().unwrap(), served.url(route));
                if let Some(t) = &token {
                    r = r.bearer_auth(t);
                }
                if method == "POST" {
                    r = r.header("content-type", "application/json").body("{}");
                }
                let r = r.send().await.unwrap();
                assert_eq!(
                    r.status(),
                    StatusCode::UNAUTHORIZED,
                    "{why}: {method} {route}"
                );
                assert_eq!(r.headers()["www-authenticate"], "Bearer");
                let e: serde_json::Value = r
                    .text()
                    .await
                    .map(|t| serde_json::from_str::<serde_json::Value>(&t).unwrap())
                    .unwrap();
                assert_eq!(e["errorCode"], "UNAUTHENTICATED", "{why}");
                assert!(e["message"].as_str().unwrap().len() > 10);
            }
        }
    };
    check(None, "missing").await;
    // Bad parameters and bodies are not looked at before the token.
    for route in [
        "/shares?maxResults=abc",
        "/shares/inntak/schemas/c/tables/elevliste_vgs/changes?startingVersion=abc",
        "/shares/%FF/schemas",
    ] {
        let r = served.http.get(served.url(route)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{route}");
    }
    check(Some("not-a-token".into()), "wrong").await;
    let good = served.tokens["vestland"].clone();
    let mut flipped = good.clone().into_bytes();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    check(
        Some(String::from_utf8(flipped).unwrap()),
        "one character off",
    )
    .await;
    // With the token, the same routes answer (no route is open without one).
    assert_eq!(served.get("vestland", "/shares").await.status(), 200);
    assert_eq!(served.get("vestland", "/no/such/route").await.status(), 404);
    // Expired: the server's clock past the token's 30 days.
    served
        .server()
        .set_clock(Some(chrono::Utc::now() + chrono::Duration::days(31)));
    check(Some(good.clone()), "expired").await;
    served.server().set_clock(None);
    // Revoked with `share revoke`: the running server refuses it at once.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let n =
        elevflyt::sharing::tokens::revoke(&Sharing::load(&served.path).unwrap(), "vestland", None)
            .unwrap();
    assert_eq!(n, 1);
    check(Some(good), "revoked").await;
    assert_eq!(
        served.get("oslo", "/shares").await.status(),
        200,
        "other recipients keep reading"
    );
    served.stop().await;
}

/// Status, `delta-table-version`, `elevflyt-transfer` and body of Vestland's version request.
async fn version(served: &Served) -> (StatusCode, Option<String>, Option<String>, String) {
    let r = served
        .get(
            "vestland",
            "/shares/inntak/schemas/c/tables/elevliste_vgs/version",
        )
        .await;
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let (v, transfer) = (header("delta-table-version"), header("elevflyt-transfer"));
    (r.status(), v, transfer, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_window_opens_pins_the_list_at_the_deadline_and_closes() {
    let s = story().await;
    // The deadline falls between the first delivery and the second.
    std::thread::sleep(std::time::Duration::from_millis(50));
    let deadline = chrono::Utc::now();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let t =
        |d: chrono::DateTime<chrono::Utc>| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let opens = deadline - chrono::Duration::days(30);
    let until = deadline + chrono::Duration::days(10);
    let window = format!(
        "[[recipient.window]]\nshare = \"inntak\"\nopens = \"{}\"\ndeadline = \"{}\"\navailable_until = \"{}\"\n",
        t(opens), t(deadline), t(until)
    );
    let served = Served::start(&s.sharing(&window)).await;
    // Before it opens: 403 saying when.
    served
        .server()
        .set_clock(Some(opens - chrono::Duration::hours(1)));
    let (status, _, _, body) = version(&served).await;
    assert_eq!(status, 403);
    assert!(
        body.contains("TRANSFER_NOT_OPEN") && body.contains(&opens.format("%Y-%m-%d").to_string()),
        "{body}"
    );
    assert_eq!(
        served
            .query("vestland", "elevliste_vgs", serde_json::json!({}))
            .await
            .status(),
        403
    );
    // Open (the clock just before the deadline): the newest version.
    served
        .server()
        .set_clock(Some(deadline - chrono::Duration::minutes(1)));
    let (status, v1, closed, _) = version(&served).await;
    assert_eq!(status, 200);
    assert!(closed.is_none());
    // The second delivery lands after the deadline. While the window is open the county sees
    // it …
    s.day2().await;
    let (_, v2, _, _) = version(&served).await;
    assert_ne!(v1, v2);
    // … but once the deadline has passed the share is pinned to the last version committed
    // by the deadline: later runs change nothing the county sees.
    served
        .server()
        .set_clock(Some(deadline + chrono::Duration::hours(1)));
    let (status, pinned, closed, _) = version(&served).await;
    assert_eq!(status, 200);
    assert_eq!(pinned, v1);
    assert!(
        closed.as_deref().unwrap().starts_with("closed; deadline="),
        "{closed:?}"
    );
    let q = served
        .query("vestland", "elevliste_vgs", serde_json::json!({}))
        .await;
    assert_eq!(
        q.headers()["delta-table-version"].to_str().unwrap(),
        v1.clone().unwrap()
    );
    assert!(q.headers().contains_key("elevflyt-transfer"));
    let later: i64 = v2.clone().unwrap().parse().unwrap();
    assert_eq!(
        served
            .query(
                "vestland",
                "elevliste_vgs",
                serde_json::json!({"version": later})
            )
            .await
            .status(),
        400,
        "no version after the deadline"
    );
    let ch = lines(
        served
            .get(
                "vestland",
                "/shares/inntak/schemas/c/tables/elevliste_vgs/changes?startingVersion=1",
            )
            .await,
    )
    .await;
    assert!(
        ch[2..].iter().all(
            |l| l.as_object().unwrap().values().next().unwrap()["version"]
                .as_i64()
                .unwrap()
                <= v1.clone().unwrap().parse::<i64>().unwrap()
        ),
        "changes stop at the deadline"
    );
    // Oslo has no window: it reads the newest.
    let r = served
        .get(
            "oslo",
            "/shares/inntak/schemas/c/tables/elevliste_vgs/version",
        )
        .await;
    assert_eq!(
        r.headers()["delta-table-version"].to_str().unwrap(),
        v2.clone().unwrap()
    );
    // After available_until: 403, file URLs too.
    let url = files(
        &lines(
            served
                .query("vestland", "elevliste_vgs", serde_json::json!({}))
                .await,
        )
        .await,
    )[0]
    .2
    .clone();
    served
        .server()
        .set_clock(Some(until + chrono::Duration::seconds(1)));
    let (status, _, _, body) = version(&served).await;
    assert_eq!(status, 403);
    assert!(body.contains("TRANSFER_ENDED"), "{body}");
    assert_eq!(served.http.get(&url).send().await.unwrap().status(), 403);
    served.stop().await;
}

#[test]
fn a_sharing_file_that_cannot_be_enforced_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    oneroster(&src, "2026-01-15", &day1());
    pipeline(dir.path(), &[("vigilo", "oneroster-json", &src)], "");
    let base = r#"
[[share]]
name = "inntak"
[[share.schema]]
pipeline = "pipeline.toml"
tables = ["elevliste_vgs", "elev"]

[[recipient]]
name = "vestland"
shares = ["inntak"]
rows = { fylkesnummer = "46" }
"#;
    let load = |body: &str| {
        let path = dir.path().join("s.toml");
        std::fs::write(&path, body).unwrap();
        Sharing::load(&path).map(|_| ()).unwrap_err().to_string()
    };
    let e = load(base);
    assert!(e.contains("`elev`") && e.contains("not partitioned"), "{e}");
    let e = load(
        &base
            .replace(", \"elev\"", "")
            .replace("[\"inntak\"]\nrows", "[\"inntak\", \"other\"]\nrows"),
    );
    assert!(e.contains("no share `other`"), "{e}");
    let e = load(&base.replace("\"elev\"", "\"elevar\""));
    assert!(e.contains("no table `elevar`"), "{e}");
    let e = load(&format!("{}\n[[recipient.window]]\nshare = \"inntak\"\nopens = \"2027-01-02T00:00:00Z\"\ndeadline = \"2027-01-01T00:00:00Z\"\navailable_until = \"2027-02-01T00:00:00Z\"\n", base.replace(", \"elev\"", "")));
    assert!(e.contains("opens ≤ deadline"), "{e}");
}

#[test]
fn plain_http_on_a_public_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    std::fs::write(&path, "[server]\nlisten = \"0.0.0.0:8080\"\n").unwrap();
    let s = Sharing::load(&path).unwrap();
    let e = s.check_listen(&s.listen).unwrap_err().to_string();
    assert!(
        e.contains("tls_cert") && e.contains("allow_plain_http"),
        "{e}"
    );
    assert!(s.check_listen(&"127.0.0.1:0".parse().unwrap()).is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vigo_export_reads_back_as_the_same_pupils_and_is_logged() {
    let s = story().await;
    s.day2().await;
    let out = s.root.join("eksport");
    let done = elevflyt::sharing::export::vigo(
        &s.pipeline,
        "46",
        None,
        &out,
        elevflyt::sharing::export::Encoding::Windows1252,
    )
    .await
    .unwrap();
    assert_eq!(done.rows, 4);
    let mut names: Vec<String> = done
        .files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let date = chrono::Utc::now().format("%Y%m%d");
    assert_eq!(
        names,
        vec![
            format!("elevliste_46501_{date}.csv"),
            format!("elevliste_46502_{date}.csv")
        ]
    );
    let bytes = std::fs::read(&done.files[0]).unwrap();
    assert!(
        std::str::from_utf8(&bytes).is_err(),
        "Windows-1252: ø is one byte"
    );
    let (text, _, _) = encoding_rs::WINDOWS_1252.decode(&bytes);
    assert!(text
        .starts_with("kommunenummer;skolenummer;fylkesnummer;klasse;fødselsnummer;elev_namn\r\n"));
    assert!(
        !text.contains("03501"),
        "Oslo's school is not in Vestland's export"
    );

    // Read back with the vigo-csv source: the same pupils in the same classes.
    let back_dir = s.root.join("back");
    std::fs::create_dir_all(&back_dir).unwrap();
    let body = format!(
        "[pipeline]\nname = \"back\"\nkommunenummer = \"4621\"\nwarehouse = \"lake\"\ncatalog = \"c\"\nschema = \"s\"\n\n[[source]]\nname = \"vigo\"\nformat = \"vigo-csv\"\nlocation = \"{}\"\n\n[quality]\nallow_synthetic_fnr = true\n",
        out.display()
    );
    std::fs::write(back_dir.join("pipeline.toml"), body).unwrap();
    let back = elevflyt::config::Pipeline::load(&back_dir.join("pipeline.toml"), None).unwrap();
    run(&back, Stage::All).await.unwrap();
    let q = "SELECT skolenummer, klasse, fodselsnummer FROM elevliste_vgs WHERE fylkesnummer = '46' ORDER BY 3";
    assert_eq!(rows(&back, q).await, rows(&s.pipeline, q).await);

    // One school, UTF-8.
    let one = elevflyt::sharing::export::vigo(
        &s.pipeline,
        "46",
        Some("46502"),
        &s.root.join("utf8"),
        elevflyt::sharing::export::Encoding::Utf8,
    )
    .await
    .unwrap();
    assert_eq!(one.files.len(), 1);
    assert!(std::fs::read_to_string(&one.files[0])
        .unwrap()
        .contains("fødselsnummer"));
    // Nothing for a county without pupils: an error, no file.
    let none = elevflyt::sharing::export::vigo(
        &s.pipeline,
        "18",
        None,
        &s.root.join("none"),
        elevflyt::sharing::export::Encoding::Utf8,
    )
    .await;
    assert!(none.unwrap_err().to_string().contains("no pupils"));
    assert!(!s.root.join("none").exists());

    let log = rows(&s.pipeline, "SELECT mottakar, operasjon, CAST(filer AS STRING), CAST(rader AS STRING), avgrensing FROM utlevering ORDER BY tid").await;
    assert_eq!(
        log,
        vec![
            vec![
                "fil".to_string(),
                "export".into(),
                "2".into(),
                "4".into(),
                "fylkesnummer=46".into()
            ],
            vec![
                "fil".to_string(),
                "export".into(),
                "1".into(),
                "2".into(),
                "fylkesnummer=46,skolenummer=46502".into()
            ],
        ]
    );
}

#[test]
fn share_token_prints_the_token_once_and_revoke_names_what_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    std::fs::write(&path, "# comment kept\n[server]\nlisten = \"127.0.0.1:8099\"\n\n[[recipient]]\nname = \"vestland\"\nshares = []\n").unwrap();
    let out = dir.path().join("v.share");
    let o = crate::common::elevflyt(&[
        "share",
        "token",
        path.to_str().unwrap(),
        "--recipient",
        "vestland",
        "--days",
        "7",
        "--out",
        out.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let token = String::from_utf8(o.stdout).unwrap().trim().to_string();
    assert!(token.len() >= 43);
    let profile: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(profile["bearerToken"], token.as_str());
    assert_eq!(profile["endpoint"], "http://127.0.0.1:8099/delta-sharing/");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("# comment kept") && !text.contains(&token));
    let o = crate::common::elevflyt(&[
        "share",
        "token",
        path.to_str().unwrap(),
        "--recipient",
        "nobody",
        "--out",
        out.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no recipient `nobody`"));
    let o = crate::common::elevflyt(&[
        "share",
        "revoke",
        path.to_str().unwrap(),
        "--recipient",
        "vestland",
    ])
    .output()
    .unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("revoked 1 token"));
    let o = crate::common::elevflyt(&[
        "share",
        "revoke",
        path.to_str().unwrap(),
        "--recipient",
        "vestland",
    ])
    .output()
    .unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "nothing left to revoke is not a silent ok"
    );
}

/// The URL of the first file of Vestland's query.
async fn first_url(served: &Served) -> String {
    let q = served
        .query("vestland", "elevliste_vgs", serde_json::json!({}))
        .await;
    files(&lines(q).await)[0].2.clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_signing_key_rotates_without_a_restart() {
    let s = story().await;
    let served = Served::start(&s.sharing("")).await;
    let old = first_url(&served).await;
    assert_eq!(served.http.get(&old).send().await.unwrap().status(), 200);
    // A new key goes first; the old one stays until its URLs have expired.
    let keys_file = s.root.join("sharing.keys");
    let old_keys = std::fs::read_to_string(&keys_file).unwrap();
    let old_line = old_keys
        .lines()
        .find(|l| !l.starts_with('#'))
        .unwrap()
        .to_string();
    use base64::Engine;
    let new_key = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 32]);
    std::fs::write(&keys_file, format!("k2 {new_key}\n{old_line}\n")).unwrap();
    let new = first_url(&served).await;
    assert_ne!(new, old);
    assert_eq!(
        served.http.get(&new).send().await.unwrap().status(),
        200,
        "signed with the new key"
    );
    assert_eq!(
        served.http.get(&old).send().await.unwrap().status(),
        200,
        "the old key still verifies"
    );
    // The old key retired: its URLs are refused, the new ones are not.
    std::fs::write(&keys_file, format!("k2 {new_key}\n")).unwrap();
    assert_eq!(served.http.get(&old).send().await.unwrap().status(), 403);
    assert_eq!(served.http.get(&new).send().await.unwrap().status(), 200);
    // A keys file broken by an edit keeps the last good keys (and says so in the log).
    std::fs::write(&keys_file, "k3 not-base64!\n").unwrap();
    assert_eq!(served.http.get(&new).send().await.unwrap().status(), 200);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_county_list_written_before_the_change_data_feed_gets_it_at_its_next_change() {
    let s = story().await;
    // An older warehouse: the list without the Change Data Feed.
    let url = s.pipeline.table_url("elevliste_vgs");
    let table = elevflyt::delta::try_open(&url).await.unwrap().unwrap();
    let before = table.version().unwrap();
    table
        .set_tbl_properties()
        .with_properties(
            [(
                "delta.enableChangeDataFeed".to_string(),
                "false".to_string(),
            )]
            .into(),
        )
        .await
        .unwrap();
    s.day2().await;
    let batches = elevflyt::ops::changes(&s.pipeline, "elevliste_vgs", before as i64 + 2, None)
        .await
        .unwrap();
    let n: usize = batches.iter().map(|b| b.num_rows()).sum();
    // Vestland's 5 corrections and Oslo's leaver, as changes of the list.
    assert_eq!(n, 6);
}
