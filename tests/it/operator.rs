//! The operator pages of `elevflyt serve`: a Voss operator logs in, reads the overview,
//! approves the list, and the county then gets the approved version; a Bergen operator gets 403
//! for Voss; a POST without the CSRF token and a logged-out visitor are refused.

use reqwest::StatusCode;

use crate::common::rows;
use crate::fixtures::tenor;
use crate::sharing::{story, Served};

const PASSWORD: &str = "korrekt hest batteri stift";

/// A client that does not follow redirects (the tests look at them).
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_string()
}

/// Logs in; returns the session cookie (`name=value`) and the Set-Cookie header.
async fn login(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    password: &str,
) -> (StatusCode, String, String) {
    let r = http
        .post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "name={name}&password={}",
            password.replace(' ', "+")
        ))
        .send()
        .await
        .unwrap();
    let set = r
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let cookie = set.split(';').next().unwrap_or_default().to_string();
    (r.status(), cookie, set)
}

async fn get(http: &reqwest::Client, url: &str, cookie: &str) -> reqwest::Response {
    http.get(url).header("cookie", cookie).send().await.unwrap()
}

async fn post(http: &reqwest::Client, url: &str, cookie: &str, form: &str) -> reqwest::Response {
    http.post(url)
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_string())
        .send()
        .await
        .unwrap()
}

/// The hidden CSRF field of a page.
fn csrf_of(html: &str) -> String {
    let at = html
        .find(r#"name="csrf" value=""#)
        .expect("a form with a CSRF token")
        + 19;
    html[at..].split('"').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_approves_the_list_and_the_county_gets_that_version_and_no_other_kommune() {
    let s = story().await; // kommune 4621
    let path = s.sharing("");
    // The county may read only what the kommune has approved.
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "name = \"inntak\"\n",
        "name = \"inntak\"\napproved_only = true\n",
        1,
    );
    std::fs::write(&path, text).unwrap();
    let sharing = elevflyt::sharing::config::Sharing::load(&path).unwrap();
    elevflyt::sharing::users::set(&sharing, "kari", &["4621".into()], &[], PASSWORD).unwrap();
    let sharing = elevflyt::sharing::config::Sharing::load(&path).unwrap();
    elevflyt::sharing::users::set(&sharing, "bergen", &["4601".into()], &[], PASSWORD).unwrap();
    let sharing = elevflyt::sharing::config::Sharing::load(&path).unwrap();
    elevflyt::sharing::users::set(
        &sharing,
        "skule",
        &["4621".into()],
        &["46502".into()],
        PASSWORD,
    )
    .unwrap();
    let stored = std::fs::read_to_string(&path).unwrap();
    assert!(
        stored.contains("$argon2id$") && !stored.contains(PASSWORD),
        "only a hash of the password"
    );
    let served = Served::start(&path).await;
    let base = served.server().base_url();
    let http = browser();

    // Logged out: every page sends the visitor to the login page.
    for page in [
        "/",
        "/kommune/4621",
        "/kommune/4621/overforing",
        "/no/such/page",
    ] {
        let r = get(&http, &format!("{base}{page}"), "").await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{page}");
        assert_eq!(location(&r), "/login");
    }
    let r = http
        .get(format!("{base}/kommune/4621"))
        .header("x-remote-user", "kari")
        .send()
        .await
        .unwrap();
    assert_eq!(
        location(&r),
        "/login",
        "a single-sign-on header counts only when the file trusts it"
    );
    let r = post(
        &http,
        &format!("{base}/kommune/4621/godkjenn"),
        "",
        "versjon=1",
    )
    .await;
    assert_eq!(
        location(&r),
        "/login",
        "a POST without a session changes nothing"
    );
    let r = get(&http, &format!("{base}/login"), "").await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("<html lang=\"nn\">")
            && html.contains("Brukarnamn")
            && html.contains("Passord")
    );

    // Before any approval the county gets nothing.
    let r = served
        .query("vestland", "elevliste_vgs", serde_json::json!({}))
        .await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("NOT_APPROVED"));

    // Log in: a session cookie the page's scripts cannot read, sent only to this site.
    let (status, cookie, set) = login(&http, &base, "kari", PASSWORD).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{set}");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Max-Age="),
        "{set}"
    );
    assert!(
        !set.contains("Secure"),
        "plain HTTP on loopback: no Secure flag"
    );
    let r = get(&http, &format!("{base}/"), &cookie).await;
    assert!(r.text().await.unwrap().contains("/kommune/4621"));
    let overview = get(&http, &format!("{base}/kommune/4621"), &cookie).await;
    assert_eq!(overview.status(), 200);
    let html = overview.text().await.unwrap();
    assert!(
        html.contains("Skular med 10. trinn") && html.contains("46501") && html.contains("46502"),
        "{html}"
    );
    assert!(html.contains("<svg"), "the trend chart");
    for n in 1..=7 {
        for dnr in [false, true] {
            assert!(
                !html.contains(&tenor(n, dnr)),
                "no fødselsnummer on the page"
            );
        }
    }
    // Another kommune's pages, and approving for it: 403.
    assert_eq!(
        get(&http, &format!("{base}/kommune/4601"), &cookie)
            .await
            .status(),
        403
    );
    assert_eq!(
        get(&http, &format!("{base}/kommune/4601/overforing"), &cookie)
            .await
            .status(),
        403
    );

    // Approve: without the CSRF token refused, with it recorded.
    let page = get(&http, &format!("{base}/kommune/4621/overforing"), &cookie)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(
            "<td>vestland</td><td>open (utan frist)</td><td>ingen: ikkje godkjend enno</td>"
        ),
        "{page}"
    );
    let csrf = csrf_of(&page);
    let version: i64 = page
        .split("godkjenn versjon ")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let form = format!("deling=inntak&skjema=c&tabell=elevliste_vgs&versjon={version}");
    let r = post(
        &http,
        &format!("{base}/kommune/4621/godkjenn"),
        &cookie,
        &form,
    )
    .await;
    assert_eq!(r.status(), 403, "no CSRF token");
    let r = post(
        &http,
        &format!("{base}/kommune/4621/godkjenn"),
        &cookie,
        &format!("{form}&csrf=forged"),
    )
    .await;
    assert_eq!(r.status(), 403, "a wrong CSRF token");
    let r = post(
        &http,
        &format!("{base}/kommune/4621/godkjenn"),
        &cookie,
        &format!("{form}&csrf={csrf}"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let log = rows(&s.pipeline, "SELECT brukar, kommunenummer, deling, skjema, tabell, CAST(versjon AS STRING) FROM godkjenning").await;
    assert_eq!(
        log,
        vec![vec![
            "kari".to_string(),
            "4621".into(),
            "inntak".into(),
            "c".into(),
            "elevliste_vgs".into(),
            version.to_string()
        ]]
    );

    // The county now gets the approved version; a later run is not served until approved.
    let r = served
        .query("vestland", "elevliste_vgs", serde_json::json!({}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["delta-table-version"].to_str().unwrap(),
        version.to_string()
    );
    s.day2().await;
    let r = served
        .get(
            "vestland",
            "/shares/inntak/schemas/c/tables/elevliste_vgs/version",
        )
        .await;
    assert_eq!(
        r.headers()["delta-table-version"].to_str().unwrap(),
        version.to_string(),
        "not approved yet"
    );
    // The county's read shows on the page.
    served.server().flush_disclosures().await;
    let page = get(&http, &format!("{base}/kommune/4621/overforing"), &cookie)
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("<td>vestland</td><td>query</td>"), "{page}");
    assert!(
        page.contains(&format!(
            "<td>vestland</td><td>open (utan frist)</td><td>{version}</td>"
        )),
        "the version the county reads"
    );

    // A Bergen operator cannot approve for this kommune, even with its own valid CSRF token.
    let (_, bergen, _) = login(&http, &base, "bergen", PASSWORD).await;
    let bergen_home = get(&http, &format!("{base}/"), &bergen)
        .await
        .text()
        .await
        .unwrap();
    let bergen_csrf = csrf_of(&bergen_home);
    let r = post(
        &http,
        &format!("{base}/kommune/4621/godkjenn"),
        &bergen,
        &format!("{form}&csrf={bergen_csrf}"),
    )
    .await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        get(&http, &format!("{base}/kommune/4621"), &bergen)
            .await
            .status(),
        403
    );
    assert_eq!(
        rows(&s.pipeline, "SELECT count(*) FROM godkjenning").await[0][0],
        "1"
    );

    // The school's work list and the runs page; a school outside an operator's schools is 403.
    let r = get(&http, &format!("{base}/kommune/4621/skule/46501"), &cookie).await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("Opne avvik") && html.contains("Klassar") && html.contains("<td>10A</td>"),
        "{html}"
    );
    let r = get(&http, &format!("{base}/kommune/4621/koyringar"), &cookie).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Kvalitet over tid"));
    assert_eq!(
        get(&http, &format!("{base}/kommune/4601/skule/46501"), &cookie)
            .await
            .status(),
        403
    );
    let (_, school_only, _) = login(&http, &base, "skule", PASSWORD).await;
    assert_eq!(
        get(
            &http,
            &format!("{base}/kommune/4621/skule/46501"),
            &school_only
        )
        .await
        .status(),
        403
    );
    assert_eq!(
        get(
            &http,
            &format!("{base}/kommune/4621/skule/46502"),
            &school_only
        )
        .await
        .status(),
        200
    );
    let overview = get(&http, &format!("{base}/kommune/4621"), &school_only)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        overview.contains("46502") && !overview.contains(">46501<"),
        "only its own school in the overview"
    );

    // Log out: the cookie is worth nothing after.
    let r = post(
        &http,
        &format!("{base}/logout"),
        &cookie,
        &format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(location(&r), "/login");
    assert_eq!(
        location(&get(&http, &format!("{base}/kommune/4621"), &cookie).await),
        "/login"
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_logins_are_refused_then_rate_limited_and_sessions_expire() {
    let s = story().await;
    let path = s.sharing("");
    let sharing = elevflyt::sharing::config::Sharing::load(&path).unwrap();
    elevflyt::sharing::users::set(&sharing, "kari", &["4621".into()], &[], PASSWORD).unwrap();
    assert!(
        elevflyt::sharing::users::set(&sharing, "kort", &["4621".into()], &[], "kort").is_err(),
        "a short password"
    );
    let served = Served::start(&path).await;
    let base = served.server().base_url();
    let http = browser();
    let (status, cookie, _) = login(&http, &base, "nobody", PASSWORD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(cookie.is_empty());
    for _ in 0..5 {
        assert_eq!(
            login(&http, &base, "kari", "wrong password!!").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login(&http, &base, "kari", PASSWORD).await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "locked for a while"
    );
    served
        .server()
        .set_clock(Some(chrono::Utc::now() + chrono::Duration::minutes(16)));
    let (status, cookie, _) = login(&http, &base, "kari", PASSWORD).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the lock ends");
    assert_eq!(
        get(&http, &format!("{base}/kommune/4621"), &cookie)
            .await
            .status(),
        200
    );
    // Sessions expire (8 hours by default).
    served
        .server()
        .set_clock(Some(chrono::Utc::now() + chrono::Duration::hours(9)));
    assert_eq!(
        location(&get(&http, &format!("{base}/kommune/4621"), &cookie).await),
        "/login"
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_a_single_sign_on_proxy_the_trusted_header_names_the_operator() {
    let s = story().await;
    let path = s.sharing("");
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "[server]\n",
        "[server]\ntrusted_user_header = \"X-Remote-User\"\n",
        1,
    ) + "\n[[user]]\nname = \"sso\"\nkommune = [\"4621\"]\n";
    std::fs::write(&path, text).unwrap();
    let served = Served::start(&path).await;
    let base = served.server().base_url();
    let http = browser();
    let as_user = |who: &str, url: String| {
        http.get(url)
            .header("x-remote-user", who.to_string())
            .send()
    };
    assert_eq!(
        as_user("sso", format!("{base}/kommune/4621"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        as_user("sso", format!("{base}/kommune/4601"))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        location(
            &as_user("nobody", format!("{base}/kommune/4621"))
                .await
                .unwrap()
        ),
        "/login"
    );
    // No password: no password login for this user.
    assert_eq!(
        login(&http, &base, "sso", "").await.0,
        StatusCode::UNAUTHORIZED
    );
    // A POST still needs the operator's CSRF token.
    let page = as_user("sso", format!("{base}/kommune/4621/overforing"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = csrf_of(&page);
    let post_as = |form: String| {
        http.post(format!("{base}/kommune/4621/godkjenn"))
            .header("x-remote-user", "sso")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
    };
    assert_eq!(
        post_as("deling=inntak&skjema=c&tabell=elevliste_vgs&versjon=1".into())
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        post_as(format!(
            "deling=inntak&skjema=c&tabell=elevliste_vgs&versjon=1&csrf={csrf}"
        ))
        .await
        .unwrap()
        .status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        rows(&s.pipeline, "SELECT brukar FROM godkjenning").await,
        vec![vec!["sso".to_string()]]
    );
    served.stop().await;
}
