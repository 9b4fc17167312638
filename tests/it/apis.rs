//! Reading the data where it lives: the FINT API and a OneRoster REST API (test servers in
//! `tests/servers/api_server.py`, started here on 127.0.0.1 with real OAuth2 token endpoints,
//! paging and faults), the OneRoster CSV zip (bulk and delta), all against the OneRoster JSON
//! export of the same generated pupils.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::common::*;

const SECRET: &str = "hemmeleg-klientnokkel-123";

/// A test API server; killed when dropped (also when a test fails).
struct ApiServer {
    child: Child,
    log: PathBuf,
}

impl ApiServer {
    fn start(kind: &str, data: &Path, date: &str, extra: &[&str], port: u16) -> ApiServer {
        let log = data.join(format!("requests-{kind}-{date}-{port}.log"));
        let mut child = Command::new("python3")
            .arg(repo().join("tests/servers/api_server.py"))
            .args([
                "--kind",
                kind,
                "--dir",
                data.to_str().unwrap(),
                "--date",
                date,
            ])
            .args(["--client-secret", SECRET, "--port", &port.to_string()])
            .args(["--log", log.to_str().unwrap()])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the test API server");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.trim() == format!("listening http://127.0.0.1:{port}"),
            "the test server did not start: {line:?}"
        );
        ApiServer { child, log }
    }

    /// Stops the server and returns its request log (`elev:0=429`, `token`, `401`, …).
    fn stop(mut self) -> Vec<String> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn generate(format: &str, out: &Path, pupils: &str) {
    let o = elevflyt(&[
        "generate",
        "--format",
        format,
        "--kommune",
        "4601",
        "--pupils",
        pupils,
        "--snapshots",
        "2",
        "--churn",
        "0.05",
        "--start",
        "2026-09-01",
        "--out",
        out.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn pipeline(dir: &Path, name: &str, source: &str) -> PathBuf {
    let body = format!(
        "[pipeline]\nname = \"{name}\"\nkommunenummer = \"4601\"\nwarehouse = \"lake-{name}\"\n\
         catalog = \"bergen_kommune\"\nschema = \"grunnskole\"\n\n{source}\n\
         [quality]\nallow_synthetic_fnr = true\n"
    );
    pipeline_file(dir, &format!("{name}.toml"), &body)
}

fn api_source(name: &str, format: &str, base: &str, port: u16, extra: &str) -> String {
    format!(
        "[[source]]\nname = \"{name}\"\nformat = \"{format}\"\nlocation = \"{base}\"\npage_size = 50\n{extra}\n\
         [source.auth]\ntoken_url = \"http://127.0.0.1:{port}/oauth/token\"\nclient_id = \"elevflyt\"\n"
    )
}

/// `elevflyt run` with the client secret in the environment: (exit code, stdout, stderr).
fn run_with_secret(pipeline: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = elevflyt(&["run", pipeline.to_str().unwrap(), "--log-level", "debug"]);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The current rows every source has in common: not `id`, `rad_hash` or `kildesystem` (they
/// name the source), nor the times (a pull is dated when it ran, a file by its name).
async fn current(pipeline: &Path) -> (Vec<Vec<String>>, Vec<Vec<String>>, Vec<Vec<String>>) {
    let p = elevflyt::config::Pipeline::load(pipeline, None).unwrap();
    let elev = rows(
        &p,
        "SELECT system_id, fodselsnummer, feidenavn, kommunenummer, fornavn, mellomnavn, \
         etternavn, fodselsdato, kjonn, epostadresse, mobiltelefonnummer, bostedsadresse, \
         postnummer, poststed FROM elev WHERE is_current ORDER BY system_id",
    )
    .await;
    let ef = rows(
        &p,
        "SELECT f.system_id, e.system_id AS elev, f.skolenummer, f.klasse, f.trinn, f.skolear, \
         f.hovedskole, f.startdato, f.sluttdato FROM elevforhold f \
         JOIN elev e ON e.id = f.elev_id AND e.is_current WHERE f.is_current ORDER BY 1",
    )
    .await;
    let skole = rows(
        &p,
        "SELECT skolenummer, organisasjonsnummer, navn, kommunenummer, fylkesnummer, eierform \
         FROM skole WHERE is_current ORDER BY 1",
    )
    .await;
    (elev, ef, skole)
}

/// The first row that differs, not thousands of them.
fn same(got: &[Vec<String>], want: &[Vec<String>], table: &str, pipeline: &Path) {
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    assert!(
        first.is_none() && got.len() == want.len(),
        "{table} of {} differs from oneroster-json: {} rows against {}; first difference: {:?} / {:?}",
        pipeline.display(),
        got.len(),
        want.len(),
        first.map(|i| &got[i]),
        first.map(|i| &want[i]),
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_pupils_through_fint_oneroster_rest_csv_and_json_give_the_same_rows() {
    let dir = tempdir();
    let d = dir.path();
    for f in ["fint", "oneroster-json", "oneroster-csv", "oneroster-rest"] {
        generate(f, &d.join(f), "300");
    }
    // Files: both days at once.
    let json = pipeline(d, "json", "[[source]]\nname = \"vigilo\"\nformat = \"oneroster-json\"\nlocation = \"oneroster-json\"\n");
    let csv = pipeline(
        d,
        "csv",
        "[[source]]\nname = \"vigilo\"\nformat = \"oneroster-csv\"\nlocation = \"oneroster-csv\"\n",
    );
    for p in [&json, &csv] {
        let (code, _, err) = run_with_secret(p, &[]);
        assert_eq!(code, 0, "{err}");
    }

    // The APIs: day one with a 429, a 500 and tokens that expire after 4 pages on the way.
    let (fint_port, rest_port) = (free_port(), free_port());
    let faults = [
        "--fail",
        "elev:1=429,person:0=500,elevforhold:2=503,klasse:0=hang",
        "--expire-token-after",
        "4",
    ];
    let fint = pipeline(
        d,
        "fint",
        &api_source(
            "fint",
            "fint",
            &format!("http://127.0.0.1:{fint_port}/utdanning"),
            fint_port,
            "timeout_seconds = 2",
        ),
    );
    let rest = pipeline(
        d,
        "rest",
        &api_source(
            "oneroster",
            "oneroster-rest",
            &format!("http://127.0.0.1:{rest_port}/ims/oneroster/rostering/v1p2"),
            rest_port,
            "",
        ),
    );
    let env = [
        ("ELEVFLYT_FINT_CLIENT_SECRET", SECRET),
        ("ELEVFLYT_ONEROSTER_CLIENT_SECRET", SECRET),
    ];
    let server = ApiServer::start("fint", &d.join("fint"), "2026-09-01", &faults, fint_port);
    let (code, out, err) = run_with_secret(&fint, &env);
    assert_eq!(code, 0, "{err}");
    let log = server.stop();
    for fault in [
        "elev:1=429",
        "person:0=500",
        "elevforhold:2=503",
        "klasse:0=hang",
        "401",
    ] {
        assert!(
            log.iter().any(|l| l == fault),
            "the server saw no {fault}: {log:?}"
        );
    }
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    let pull = &summary["pulls"][0];
    println!("FINT pull, day one: {pull}");
    // 429, 500, 503 and a page that never came (timeout_seconds = 2): four retries.
    assert_eq!(pull["retries"], 4, "{pull}");
    assert!(err.contains("no answer in time"), "the timeout is logged");
    assert!(
        pull["tokens"].as_u64().unwrap() >= 2,
        "a new token after expiry: {pull}"
    );
    // 300 pupils in pages of 50: 6 pages each of elev, person, elevforhold, klassemedlemskap.
    assert!(pull["pages"].as_u64().unwrap() >= 4 * 6 + 2, "{pull}");
    // The secret never appears in what elevflyt prints, even at debug level.
    assert!(!out.contains(SECRET) && !err.contains(SECRET));

    let server = ApiServer::start(
        "oneroster",
        &d.join("oneroster-rest"),
        "2026-09-01",
        &[
            "--version",
            "v1p2",
            "--fail",
            "users:2=429,enrollments:0=502",
            "--expire-token-after",
            "5",
        ],
        rest_port,
    );
    let (code, _, err) = run_with_secret(&rest, &env);
    assert_eq!(code, 0, "{err}");
    let log = server.stop();
    assert!(
        log.iter().any(|l| l == "users:2=429") && log.iter().any(|l| l == "401"),
        "{log:?}"
    );

    // Day two: the servers now serve the second snapshot.
    let server = ApiServer::start("fint", &d.join("fint"), "2026-09-02", &[], fint_port);
    let (code, out, err) = run_with_secret(&fint, &env);
    assert_eq!(code, 0, "{err}");
    drop(server);
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["pulls"][0]["unchanged"], false, "{out}");
    assert!(
        summary["closed"]["elev"].as_u64().unwrap() > 0,
        "day two ends some pupils: {out}"
    );
    let server = ApiServer::start(
        "oneroster",
        &d.join("oneroster-rest"),
        "2026-09-02",
        &["--version", "v1p2"],
        rest_port,
    );
    let (code, _, err) = run_with_secret(&rest, &env);
    assert_eq!(code, 0, "{err}");
    drop(server);

    let (elev, ef, skole) = current(&json).await;
    assert!(
        elev.len() > 250 && ef.len() == elev.len(),
        "{} {}",
        elev.len(),
        ef.len()
    );
    for other in [&csv, &fint, &rest] {
        let (e, f, s) = current(other).await;
        same(&e, &elev, "elev", other);
        same(&f, &ef, "elevforhold", other);
        same(&s, &skole, "skole", other);
    }

    // Every page is archived as received: URL, sha256 of its bytes, as-of; no secret in it.
    let p = elevflyt::config::Pipeline::load(&fint, None).unwrap();
    let pages = rows(
        &p,
        "SELECT kjelde, sha256, count(*) OVER (PARTITION BY as_of) AS pages, post FROM raw_fint \
         WHERE entitet = '_fil' ORDER BY as_of, kjelde",
    )
    .await;
    assert!(pages
        .iter()
        .all(|r| r[0].starts_with(&format!("http://127.0.0.1:{fint_port}/utdanning/"))));
    assert!(
        pages
            .iter()
            .any(|r| r[0].ends_with("/utdanning/elev/elev?size=50&offset=50")),
        "{:?}",
        pages[0]
    );
    assert!(pages
        .iter()
        .all(|r| r[1].len() == 64 && r[3].contains("\"page\"")));
    assert!(!pages.iter().any(|r| r.iter().any(|c| c.contains(SECRET))));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pull_killed_at_a_random_page_leaves_every_table_at_its_previous_version() {
    let dir = tempdir();
    let d = dir.path();
    generate("fint", &d.join("fint"), "200");
    let port = free_port();
    let fint = pipeline(
        d,
        "fint",
        &(api_source(
            "fint",
            "fint",
            &format!("http://127.0.0.1:{port}/utdanning"),
            port,
            "max_retries = 1\ntimeout_seconds = 5",
        ) + "grant = \"password\"\nusername = \"skuleadmin\"\n"),
    );
    // The password grant, as FINT clients use it; both secrets from the environment.
    let env = [
        ("ELEVFLYT_FINT_CLIENT_SECRET", SECRET),
        ("ELEVFLYT_FINT_PASSWORD", "passord-for-skuleadmin"),
    ];
    let user = [
        "--username",
        "skuleadmin",
        "--password",
        "passord-for-skuleadmin",
    ];
    let (code, _, err) = run_with_secret(&fint, &env[..1]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("set ELEVFLYT_FINT_PASSWORD"), "{err}");
    let server = ApiServer::start("fint", &d.join("fint"), "2026-09-01", &user, port);
    let (code, _, err) = run_with_secret(&fint, &env);
    assert_eq!(code, 0, "{err}");
    drop(server);
    let p = elevflyt::config::Pipeline::load(&fint, None).unwrap();
    let tables = [
        "raw_fint",
        "elev",
        "elevforhold",
        "skole",
        "elevliste_vgs",
        "avvik",
    ];
    let before = versions(&p, &tables).await;

    // Day two's pull: 4 pages each of elev, person, elevforhold, klassemedlemskap + 2 more.
    let pages = 18u64;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let die_at = 1 + seed % pages;
    println!("the server dies at page request {die_at}");
    let die = ["--die-at-page", &die_at.to_string()];
    let server = ApiServer::start(
        "fint",
        &d.join("fint"),
        "2026-09-02",
        &[&user[..], &die[..]].concat(),
        port,
    );
    let (code, out, err) = run_with_secret(&fint, &env);
    drop(server);
    assert_eq!(code, 1, "a broken pull fails: {out}{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains(&format!("http://127.0.0.1:{port}/utdanning/")),
        "{last}"
    );
    assert!(last.contains("nothing was written"), "{last}");
    assert!(!err.contains(SECRET));
    assert_eq!(versions(&p, &tables).await, before, "no table changed");

    // The next run starts over and gets day two.
    let server = ApiServer::start("fint", &d.join("fint"), "2026-09-02", &user, port);
    let (code, out, err) = run_with_secret(&fint, &env);
    drop(server);
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        summary["pulls"][0]["pages"].as_u64().unwrap() >= pages,
        "{out}"
    );
    assert_eq!(
        count(&p, "SELECT count(DISTINCT as_of) FROM raw_fint").await,
        2,
        "one snapshot per successful pull"
    );
    // A rerun against the same data: sinceTimeStamp finds nothing new, no snapshot is added.
    let server = ApiServer::start("fint", &d.join("fint"), "2026-09-02", &user, port);
    let after = versions(&p, &tables).await;
    let (code, out, err) = run_with_secret(&fint, &env);
    drop(server);
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["pulls"][0]["unchanged"], true, "{out}");
    assert_eq!(
        versions(&p, &["raw_fint", "elev", "elevforhold"]).await,
        after[..3].to_vec()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn api_sources_refuse_clearly_without_credentials_or_with_wrong_ones() {
    let dir = tempdir();
    let d = dir.path();
    generate("oneroster-rest", &d.join("or"), "20");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}/ims/oneroster/v1p1");
    let p = pipeline(
        d,
        "rest",
        &api_source("oneroster", "oneroster-rest", &base, port, ""),
    );
    let server = ApiServer::start("oneroster", &d.join("or"), "2026-09-01", &[], port);

    // No secret in the environment: exit 2, naming the variable.
    let (code, _, err) = run_with_secret(&p, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("set ELEVFLYT_ONEROSTER_CLIENT_SECRET"),
        "{err}"
    );
    // A wrong secret: exit 1, naming the token endpoint and the OAuth2 error, never the secret.
    let wrong = "feil-nokkel-som-ikkje-skal-visast";
    let (code, _, err) = run_with_secret(&p, &[("ELEVFLYT_ONEROSTER_CLIENT_SECRET", wrong)]);
    assert_eq!(code, 1, "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains(&format!(
            "token endpoint http://127.0.0.1:{port}/oauth/token"
        )),
        "{last}"
    );
    assert!(
        last.contains("401") && last.contains("invalid_client"),
        "{last}"
    );
    assert!(!err.contains(wrong));

    // A page larger than max_page_mb stops the pull, naming the URL and the limit.
    let small = pipeline(
        d,
        "small",
        &api_source(
            "oneroster",
            "oneroster-rest",
            &base,
            port,
            "max_page_mb = 0.001",
        ),
    );
    let (code, _, err) = run_with_secret(&small, &[("ELEVFLYT_ONEROSTER_CLIENT_SECRET", SECRET)]);
    assert_eq!(code, 1, "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains(&base) && last.contains("larger than 1 KiB (max_page_mb)"),
        "{last}"
    );
    drop(server);

    // A location of the wrong kind is a configuration error before anything is sent.
    let bad = pipeline(d, "bad", "[[source]]\nname = \"v\"\nformat = \"oneroster-json\"\nlocation = \"https://example.invalid/x\"\n");
    let (code, _, err) = run_with_secret(&bad, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is read from files"), "{err}");
    let bad = pipeline(
        d,
        "bad2",
        &api_source("fint", "fint", "http://127.0.0.1:9/elev", 9, ""),
    );
    let (code, _, err) = run_with_secret(&bad, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("ends with `/utdanning`"), "{err}");
    let bad = pipeline(
        d,
        "bad3",
        &api_source(
            "fint",
            "fint",
            "http://brukar:passord@127.0.0.1:9/utdanning",
            9,
            "",
        ),
    );
    let (code, _, err) = run_with_secret(&bad, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no user, password or query") && !err.contains("passord@"),
        "{err}"
    );
    // Nothing answers: the error names the URL and the cause, after the retries.
    let p = pipeline(
        d,
        "gone",
        &api_source(
            "oneroster",
            "oneroster-rest",
            &base,
            port,
            "max_retries = 1",
        ),
    );
    let (code, _, err) = run_with_secret(&p, &[("ELEVFLYT_ONEROSTER_CLIENT_SECRET", SECRET)]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("token endpoint") && err.contains("connection failed"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_oneroster_csv_delta_is_laid_over_the_previous_snapshot() {
    use std::io::Write;
    let dir = tempdir();
    let d = dir.path();
    generate("oneroster-csv", &d.join("gen"), "40");
    std::fs::create_dir(d.join("csv")).unwrap();
    let bulk = d.join("csv/oneroster-2026-09-01.zip");
    std::fs::copy(d.join("gen/oneroster-2026-09-01.zip"), &bulk).unwrap();
    let mut z = zip::ZipArchive::new(std::fs::File::open(&bulk).unwrap()).unwrap();
    let mut read = |n: &str| {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut z.by_name(n).unwrap(), &mut s).unwrap();
        s
    };
    let users = read("users.csv");
    let enrollments = read("enrollments.csv");
    let lines: Vec<&str> = users.lines().collect();
    let field = |l: &str, i: usize| l.split(',').nth(i).unwrap().to_string();
    let (renamed, leaver) = (field(lines[1], 0), field(lines[2], 0));
    let org = field(lines[1], 21);
    let mut cells: Vec<String> = lines[1].split(',').map(str::to_string).collect();
    cells[7] = "Nyttnamn".into();
    let mut gone: Vec<String> = lines[2].split(',').map(str::to_string).collect();
    gone[1] = "tobedeleted".into();
    let delta = d.join("csv/oneroster-2026-09-02.zip");
    let mut w = zip::ZipWriter::new(std::fs::File::create(&delta).unwrap());
    let mut put = |name: &str, body: String| {
        w.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(body.as_bytes()).unwrap();
    };
    put("manifest.csv", "propertyName,value\noneroster.version,1.2\nfile.users,delta\nfile.roles,delta\nfile.orgs,delta\nfile.classes,delta\nfile.enrollments,delta\nfile.academicSessions,delta\n".into());
    put(
        "users.csv",
        format!("{}\n{}\n{}\n", lines[0], cells.join(","), gone.join(",")),
    );
    put("roles.csv", format!("sourcedId,status,dateLastModified,userSourcedId,roleType,role,beginDate,endDate,orgSourcedId,userProfileSourcedId\nr1,active,,{renamed},primary,student,,,{org},\nr2,active,,{leaver},primary,student,,,{org},\n"));
    put(
        "enrollments.csv",
        format!("{}\n", enrollments.lines().next().unwrap()),
    );
    for f in ["orgs", "classes", "academicSessions"] {
        put(
            &format!("{f}.csv"),
            format!("{}\n", read(&format!("{f}.csv")).lines().next().unwrap()),
        );
    }
    w.finish().unwrap();

    // A delta with nothing before it is refused, naming the file.
    let p = pipeline(
        d,
        "csv",
        "[[source]]\nname = \"vigilo\"\nformat = \"oneroster-csv\"\nlocation = \"csv\"\n",
    );
    std::fs::rename(&bulk, d.join("bulk.zip")).unwrap();
    let (code, _, err) = run_with_secret(&p, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("oneroster-2026-09-02.zip") && err.contains("deliver a bulk file first"),
        "{err}"
    );
    std::fs::rename(d.join("bulk.zip"), &bulk).unwrap();

    let (code, _, err) = run_with_secret(&p, &[]);
    assert_eq!(code, 0, "{err}");
    let pl = elevflyt::config::Pipeline::load(&p, None).unwrap();
    let history = rows(
        &pl,
        &format!("SELECT system_id, etternavn, CAST(valid_from AS DATE), CAST(valid_to AS DATE) FROM elev \
                  WHERE system_id IN ('{renamed}', '{leaver}') ORDER BY 1, 3"),
    )
    .await;
    assert_eq!(
        history,
        vec![
            vec![
                renamed.clone(),
                field(lines[1], 7),
                "2026-09-01".into(),
                "2026-09-02".into()
            ],
            vec![
                renamed.clone(),
                "Nyttnamn".into(),
                "2026-09-02".into(),
                String::new()
            ],
            vec![
                leaver.clone(),
                field(lines[2], 7),
                "2026-09-01".into(),
                "2026-09-02".into()
            ],
        ]
    );
    // Everyone else is still there on day two, carried with the lineage of the bulk file.
    assert_eq!(
        count(&pl, "SELECT count(*) FROM elev WHERE is_current").await,
        39
    );
    let carried = rows(
        &pl,
        "SELECT kjelde, count(*) FROM raw_vigilo WHERE entitet = 'users' \
         AND as_of = TIMESTAMP '2026-09-02T00:00:00Z' GROUP BY 1 ORDER BY 1",
    )
    .await;
    assert_eq!(
        carried,
        vec![
            vec!["oneroster-2026-09-01.zip".to_string(), "38".into()],
            vec!["oneroster-2026-09-02.zip".to_string(), "2".into()],
        ]
    );
}
