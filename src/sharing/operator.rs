//! The operator pages of `elevflyt serve`, in Nynorsk, server-rendered and working without
//! JavaScript: log in, see a kommune's transfer (schools, open deviations, the county's reads),
//! and approve the list ("lista er klar", recorded in `godkjenning`). Who may see what: an
//! operator is scoped to kommuner (and optionally schools) and gets 403 for anything else;
//! sessions are `HttpOnly`, `SameSite=Strict` cookies (`Secure` under TLS) that expire; every
//! POST carries the session's CSRF token; failed logins are rate-limited
//! (docs/ARCHITECTURE.md, "Operator pages").

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::config::{Sharing, User};
use super::Server;
use crate::config::Pipeline;
use crate::report::esc;

const COOKIE: &str = "elevflyt_okt";
/// Failed logins of one user name before it waits.
const MAX_FAILURES: u32 = 5;
const LOCKOUT_MINUTES: i64 = 15;

struct Session {
    user: String,
    csrf: String,
    expires: DateTime<Utc>,
}

/// Sessions (by the SHA-256 of the cookie) and failed logins (by user name).
pub struct Sessions {
    open: Mutex<HashMap<[u8; 32], Session>>,
    failures: Mutex<HashMap<String, (u32, DateTime<Utc>)>>,
    /// Derives the CSRF token of an operator who comes through the trusted header.
    secret: [u8; 32],
}

impl Sessions {
    pub fn new() -> crate::Result<Sessions> {
        Ok(Sessions {
            open: Mutex::default(),
            failures: Mutex::default(),
            secret: super::tokens::random_bytes::<32>()?,
        })
    }
}

/// A logged-in operator on this request.
pub struct Operator {
    pub user: User,
    pub csrf: String,
    sharing: Arc<Sharing>,
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn session_key(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

/// The operator of this request, if logged in (an expired session is removed).
fn operator(server: &Server, headers: &HeaderMap) -> Option<Operator> {
    let sharing = server.sharing();
    if let Some(name) = &sharing.trusted_user_header {
        // Single sign-on: the proxy in front says who it is; that user's scope applies.
        let user = sharing.user(headers.get(name)?.to_str().ok()?)?.clone();
        let mut mac = Sha256::new();
        mac.update(server.sessions.secret);
        mac.update(user.name.as_bytes());
        use base64::Engine;
        let csrf = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize());
        return Some(Operator {
            user,
            csrf,
            sharing: sharing.clone(),
        });
    }
    let key = session_key(cookie_value(headers, COOKIE)?);
    let mut open = server
        .sessions
        .open
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let s = open.get(&key)?;
    // A user removed from the file, or an expired session, is logged out.
    let user = sharing.user(&s.user).cloned();
    if s.expires <= server.now() || user.is_none() {
        open.remove(&key);
        return None;
    }
    Some(Operator {
        user: user?,
        csrf: s.csrf.clone(),
        sharing: sharing.clone(),
    })
}

/// A path that is no page: the login page when nobody is logged in, else 404.
pub fn not_found(server: &Server, headers: &HeaderMap) -> Response {
    match operator(server, headers) {
        None => to_login(),
        Some(op) => page(
            StatusCode::NOT_FOUND,
            "Fann ikkje sida",
            Some(&op),
            "<p>Sida finst ikkje.</p>",
        ),
    }
}

/// A page's answer when nobody is logged in: to the login page.
fn to_login() -> Response {
    Redirect::to("/login").into_response()
}

fn forbidden() -> Response {
    page(
        StatusCode::FORBIDDEN,
        "Ingen tilgang",
        None,
        "<p>Du har ikkje tilgang til denne sida.</p>",
    )
}

/// A whole page: the same head, styles and navigation everywhere.
fn page(status: StatusCode, title: &str, op: Option<&Operator>, body: &str) -> Response {
    let nav = match op {
        Some(op) => {
            let mut links = String::new();
            for k in &op.user.kommuner {
                let _ = write!(
                    links,
                    r#"<li><a href="/kommune/{k}">Oversikt {k}</a></li><li><a href="/kommune/{k}/overforing">Overføring {k}</a></li><li><a href="/kommune/{k}/koyringar">Køyringar {k}</a></li>"#
                );
            }
            format!(
                r#"<nav aria-label="Hovudmeny"><ul>{links}</ul>
<form method="post" action="/logout"><input type="hidden" name="csrf" value="{csrf}"><button type="submit">Logg ut ({user})</button></form></nav>"#,
                csrf = esc(&op.csrf),
                user = esc(&op.user.name)
            )
        }
        None => String::new(),
    };
    let html = format!(
        r#"<!doctype html>
<html lang="nn"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} – elevflyt</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0; color: #1b1b1b; line-height: 1.45; }}
header, main {{ padding: 1em 1.5em; max-width: 70em; }} header {{ background: #0b3d63; color: #fff; max-width: none; }}
header a {{ color: #fff; }} nav ul {{ list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 1em; }}
nav form {{ display: inline; }} table {{ border-collapse: collapse; margin: .5em 0 1.5em; }}
th, td {{ border: 1px solid #bbb; padding: .3em .6em; text-align: left; }} th {{ background: #eef2f6; }}
.ok {{ color: #14622b; }} .feil {{ color: #a4161a; font-weight: bold; }}
button {{ font-size: 1em; padding: .4em .9em; }} label {{ display: block; margin-top: .6em; }}
input[type=text], input[type=password] {{ font-size: 1em; padding: .3em; }}
@media (max-width: 40em) {{ table {{ font-size: .8em; width: 100%; }} th, td {{ padding: .2em .3em; overflow-wrap: anywhere; }}
  header, main {{ padding: .8em; }} }}
</style></head><body>
<header><p><a href="/">elevflyt</a> – overføring av elevlista til fylket</p>{nav}</header>
<main><h1>{title}</h1>
{body}
</main></body></html>
"#,
        title = esc(title)
    );
    let mut r = (status, html).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn form_fields(body: &Bytes) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// Whether a POST carries this session's CSRF token.
fn csrf_ok(op: &Operator, fields: &HashMap<String, String>) -> bool {
    fields
        .get("csrf")
        .is_some_and(|t| super::tokens::constant_time_eq(t.as_bytes(), op.csrf.as_bytes()))
}

fn csrf_refused() -> Response {
    page(
        StatusCode::FORBIDDEN,
        "Skjemaet er utgått",
        None,
        "<p>Skjemaet mangla ein gyldig kontrollkode (CSRF). Opne sida på nytt og prøv att.</p>",
    )
}

// ------------------------------------------------------------------------------------- login

fn login_form(message: Option<&str>) -> String {
    format!(
        r#"{msg}<form method="post" action="/login">
<label for="name">Brukarnamn</label><input type="text" id="name" name="name" autocomplete="username" required>
<label for="password">Passord</label><input type="password" id="password" name="password" autocomplete="current-password" required>
<p><button type="submit">Logg inn</button></p></form>"#,
        msg = message
            .map(|m| format!(r#"<p class="feil" role="alert">{}</p>"#, esc(m)))
            .unwrap_or_default()
    )
}

pub async fn login_page(State(server): State<Arc<Server>>, headers: HeaderMap) -> Response {
    if operator(&server, &headers).is_some() {
        return Redirect::to("/").into_response();
    }
    page(StatusCode::OK, "Logg inn", None, &login_form(None))
}

pub async fn login(State(server): State<Arc<Server>>, body: Bytes) -> Response {
    let fields = form_fields(&body);
    let name = fields.get("name").map(String::as_str).unwrap_or_default();
    let password = fields
        .get("password")
        .map(String::as_str)
        .unwrap_or_default();
    let now = server.now();
    {
        let failures = server
            .sessions
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((n, since)) = failures.get(name) {
            if *n >= MAX_FAILURES && now < *since + chrono::Duration::minutes(LOCKOUT_MINUTES) {
                tracing::warn!(user = name, "login refused: too many failed logins");
                return page(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Logg inn",
                    None,
                    &login_form(Some(&format!(
                        "For mange mislukka innloggingar. Prøv att om {LOCKOUT_MINUTES} minutt."
                    ))),
                );
            }
        }
    }
    let sharing = server.sharing();
    // A user that does not exist costs a hash check too, so the answer takes as long.
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let dummy =
        DUMMY.get_or_init(|| super::users::hash("elevflyt-dummy-passord").unwrap_or_default());
    let stored = sharing.user(name).and_then(|u| u.password.as_deref());
    let good = super::users::verify(password, stored.unwrap_or(dummy)) && stored.is_some();
    if !good {
        let mut failures = server
            .sessions
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let f = failures.entry(name.to_string()).or_insert((0, now));
        if now >= f.1 + chrono::Duration::minutes(LOCKOUT_MINUTES) {
            *f = (0, now);
        }
        f.0 += 1;
        tracing::info!(user = name, failures = f.0, "login failed");
        return page(
            StatusCode::UNAUTHORIZED,
            "Logg inn",
            None,
            &login_form(Some("Feil brukarnamn eller passord.")),
        );
    }
    server
        .sessions
        .failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(name);
    let (Ok(cookie), Ok(csrf)) = (
        super::tokens::random_bytes::<32>(),
        super::tokens::random_bytes::<32>(),
    ) else {
        return page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Feil",
            None,
            "<p>Prøv att.</p>",
        );
    };
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let cookie = b64.encode(cookie);
    let mut open = server
        .sessions
        .open
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    // Sessions that ended without a logout go when a new one starts.
    open.retain(|_, s| s.expires > now);
    open.insert(
        session_key(&cookie),
        Session {
            user: name.to_string(),
            csrf: b64.encode(csrf),
            expires: now + sharing.session,
        },
    );
    drop(open);
    tracing::info!(user = name, "logged in");
    let secure = if sharing.tls.is_some() {
        "; Secure"
    } else {
        ""
    };
    let mut r = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}={cookie}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        sharing.session.num_seconds()
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

pub async fn logout(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(op) = operator(&server, &headers) else {
        return to_login();
    };
    if !csrf_ok(&op, &form_fields(&body)) {
        return csrf_refused();
    }
    if let Some(c) = cookie_value(&headers, COOKIE) {
        server
            .sessions
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&session_key(c));
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("elevflyt_okt=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    r
}

// ------------------------------------------------------------------------------------- pages

pub async fn home(State(server): State<Arc<Server>>, headers: HeaderMap) -> Response {
    let Some(op) = operator(&server, &headers) else {
        return to_login();
    };
    let mut body = String::from("<ul>");
    for k in &op.user.kommuner {
        let _ = write!(body, r#"<li><a href="/kommune/{k}">Kommune {k}</a></li>"#);
    }
    body.push_str("</ul>");
    page(StatusCode::OK, "Dine kommunar", Some(&op), &body)
}

/// The operator and the kommune's pipelines, or the answer that refuses the request.
fn scoped(
    server: &Server,
    headers: &HeaderMap,
    kommune: &str,
) -> Result<(Operator, Vec<Arc<Pipeline>>), Box<Response>> {
    let op = operator(server, headers).ok_or_else(|| Box::new(to_login()))?;
    if !op.user.sees_kommune(kommune) {
        tracing::warn!(user = %op.user.name, kommune, "operator refused a kommune outside their scope");
        return Err(Box::new(forbidden()));
    }
    let pipelines = op.sharing.pipelines_of(kommune);
    Ok((op, pipelines))
}

/// The transfer state of a window now, in words.
fn window_state(w: Option<super::config::Window>, now: DateTime<Utc>) -> String {
    let Some(w) = w else {
        return "open (utan frist)".into();
    };
    let day = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M UTC").to_string();
    if now < w.opens {
        format!("ikkje open (opnar {})", day(w.opens))
    } else if now <= w.deadline {
        format!(
            "open, {} dagar til fristen ({})",
            (w.deadline - now).num_days(),
            day(w.deadline)
        )
    } else if now < w.available_until {
        format!("stengd ved fristen {} (lista er låst)", day(w.deadline))
    } else {
        "stengd".into()
    }
}

pub async fn overview(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(kommune): Path<String>,
) -> Response {
    let (op, pipelines) = match scoped(&server, &headers, &kommune) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let mut body = String::new();
    for p in &pipelines {
        let r = match crate::report::build(p).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "overview");
                return page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Feil",
                    Some(&op),
                    "<p>Sida kunne ikkje lesast.</p>",
                );
            }
        };
        let mut tenth: std::collections::BTreeMap<&str, i64> = Default::default();
        for k in r
            .elever_per_klasse
            .iter()
            .filter(|k| k.klasse.starts_with("10"))
        {
            *tenth.entry(k.skolenummer.as_str()).or_default() += k.antall;
        }
        let _ = write!(
            body,
            "<h2>{}</h2><p>Sist lasta: {}. Ugyldige fødselsnummer: {}.</p>",
            esc(&r.pipeline),
            esc(r.sist_lastet.as_deref().unwrap_or("aldri")),
            r.ugyldige_fodselsnummer
        );
        body.push_str("<table><caption>Skular med 10. trinn</caption><tr><th scope=col>Skule</th><th scope=col>Elevar på 10. trinn</th><th scope=col>Opne avvik</th></tr>");
        for (school, n) in tenth.iter().filter(|(s, _)| op.user.sees_school(s)) {
            let open = r
                .apne_avvik_per_skole
                .iter()
                .find(|a| a.skolenummer == *school)
                .map_or(0, |a| a.antall);
            let _ = write!(
                body,
                r#"<tr><td><a href="/kommune/{k}/skule/{s}">{s}</a></td><td>{n}</td><td>{open}</td></tr>"#,
                k = esc(&kommune),
                s = esc(school)
            );
        }
        body.push_str("</table>");
        let trend: Vec<(String, f64)> = r
            .kvalitet_over_tid
            .iter()
            .filter_map(|q| {
                q.ugyldige_fodselsnummer
                    .map(|v| (q.malt.chars().take(16).collect(), v))
            })
            .collect();
        let found = match crate::ops::session_at(p, None, None).await {
            Ok(ctx) => crate::report::rows(
                &ctx,
                "avvik",
                "SELECT CAST(min(oppdaga) AS STRING) AS t, CAST(count(*) AS STRING) AS n FROM avvik GROUP BY run_id ORDER BY t",
            )
            .await
            .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let found: Vec<(String, f64)> = found
            .iter()
            .filter_map(|r| {
                Some((
                    r[0].as_deref()?.chars().take(16).collect(),
                    r[1].as_deref()?.parse().ok()?,
                ))
            })
            .collect();
        body.push_str(&crate::report::bars(
            "Avvik funne per køyring",
            &found,
            "#b45309",
        ));
        body.push_str(&crate::report::bars(
            "Ugyldige fødselsnummer per køyring",
            &trend,
            "#a4161a",
        ));
        body.push_str(&transfers(&server, &op, p, false).await);
    }
    page(
        StatusCode::OK,
        &format!("Oversikt – kommune {kommune}"),
        Some(&op),
        &body,
    )
}

pub async fn transfer(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(kommune): Path<String>,
) -> Response {
    let (op, pipelines) = match scoped(&server, &headers, &kommune) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let mut body = String::new();
    for p in &pipelines {
        body.push_str(&transfers(&server, &op, p, true).await);
    }
    page(
        StatusCode::OK,
        &format!("Overføring – kommune {kommune}"),
        Some(&op),
        &body,
    )
}

/// Per share, schema and recipient of a pipeline: window, served version, approvals, and the
/// county's reads; with the approve form when `approve`.
async fn transfers(server: &Server, op: &Operator, p: &Arc<Pipeline>, approve: bool) -> String {
    let now = server.now();
    let mut out = String::new();
    for sh in &op.sharing.shares {
        for sc in sh.schemas.iter().filter(|sc| sc.pipeline.path == p.path) {
            for t in &sc.tables {
                let view = match server.tables.get(&p.table_url(t.name)) {
                    Ok(v) => v,
                    Err(_) => continue,
                };
                let latest = view.latest().await.ok().flatten();
                let approved =
                    super::approved_version(server, p, &sh.name, &sc.name, t.name, i64::MAX).await;
                let _ =
                    write!(
                    out,
                    "<h2>Deling {} – {}.{}</h2><p>Nyaste versjon: {}. Godkjend versjon: {}.{}</p>",
                    esc(&sh.name),
                    esc(&sc.name),
                    esc(t.name),
                    latest.map_or("ingen".into(), |v| v.to_string()),
                    approved.map_or("ingen".into(), |v| v.to_string()),
                    if sh.approved_only { " Fylket får berre godkjende versjonar." } else { "" }
                );
                out.push_str("<table><caption>Mottakarar</caption><tr><th scope=col>Mottakar</th><th scope=col>Status</th><th scope=col>Versjon mottakaren les</th></tr>");
                for r in op
                    .sharing
                    .recipients
                    .iter()
                    .filter(|r| r.shares.contains(&sh.name))
                {
                    let reads = super::protocol::served_version(
                        server,
                        &op.sharing,
                        r,
                        (sh, sc),
                        &view,
                        t.name,
                    )
                    .await
                    .map_or_else(
                        |why| {
                            match why {
                                "NOT_APPROVED" => "ingen: ikkje godkjend enno",
                                "TRANSFER_NOT_OPEN" => "ingen: ikkje open enno",
                                "TRANSFER_ENDED" => "ingen: stengd",
                                "RESOURCE_DOES_NOT_EXIST" => "ingen: ingen data enno",
                                _ => "ingen: feil ved lesing",
                            }
                            .to_string()
                        },
                        |v| v.to_string(),
                    );
                    let _ = write!(
                        out,
                        "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(&r.name),
                        esc(&window_state(op.sharing.window(r, &sh.name), now)),
                        esc(&reads)
                    );
                }
                out.push_str("</table>");
                if approve {
                    if let Some(v) = latest {
                        let _ = write!(
                            out,
                            r#"<form method="post" action="/kommune/{k}/godkjenn">
<input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="deling" value="{share}">
<input type="hidden" name="skjema" value="{schema}"><input type="hidden" name="tabell" value="{table}">
<input type="hidden" name="versjon" value="{v}">
<button type="submit">Lista er klar: godkjenn versjon {v}</button></form>"#,
                            k = esc(p.kommunenummer()),
                            csrf = esc(&op.csrf),
                            share = esc(&sh.name),
                            schema = esc(&sc.name),
                            table = esc(t.name)
                        );
                    }
                }
            }
        }
    }
    let reads = crate::ops::session_at(p, None, None).await;
    if let Ok(ctx) = reads {
        let read = crate::report::rows(
            &ctx,
            "utlevering",
            "SELECT CAST(tid AS STRING) AS tidspunkt, mottakar, operasjon, CAST(versjon AS STRING) AS v, CAST(rader AS STRING) AS n FROM utlevering ORDER BY tid DESC LIMIT 20",
        )
        .await;
        out.push_str("<table><caption>Kva fylket har lese (utlevering, siste 20)</caption><tr><th scope=col>Tid</th><th scope=col>Mottakar</th><th scope=col>Operasjon</th><th scope=col>Versjon</th><th scope=col>Rader</th></tr>");
        match read {
            Err(e) => {
                tracing::error!(error = %e, "utlevering on the transfer page");
                out.push_str("<tr><td colspan=5>Utleveringsloggen kunne ikkje lesast.</td></tr>");
            }
            Ok(rows) if rows.is_empty() => {
                out.push_str("<tr><td colspan=5>Ingenting lese enno.</td></tr>")
            }
            Ok(rows) => {
                for r in rows {
                    out.push_str("<tr>");
                    for c in r {
                        let _ = write!(out, "<td>{}</td>", esc(c.as_deref().unwrap_or("")));
                    }
                    out.push_str("</tr>");
                }
            }
        }
        out.push_str("</table>");
    }
    out
}

/// `POST /kommune/{nr}/godkjenn`: records the approval of a version in `godkjenning`.
pub async fn approve(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(kommune): Path<String>,
    body: Bytes,
) -> Response {
    let (op, pipelines) = match scoped(&server, &headers, &kommune) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let fields = form_fields(&body);
    if !csrf_ok(&op, &fields) {
        return csrf_refused();
    }
    let field = |k: &str| fields.get(k).map(String::as_str).unwrap_or_default();
    let bad = |m: &str| {
        page(
            StatusCode::BAD_REQUEST,
            "Kunne ikkje godkjenne",
            Some(&op),
            &format!("<p>{}</p>", esc(m)),
        )
    };
    let Some((sh, sc, t)) = op.sharing.share(field("deling")).and_then(|sh| {
        let sc = sh.schema(field("skjema"))?;
        let t = sc.table(field("tabell"))?;
        Some((sh, sc, t))
    }) else {
        return bad("Ukjend deling, skjema eller tabell.");
    };
    if sc.pipeline.kommunenummer() != kommune
        || !pipelines.iter().any(|p| p.path == sc.pipeline.path)
    {
        return forbidden();
    }
    let Ok(version) = field("versjon").parse::<i64>() else {
        return bad("Versjonen manglar.");
    };
    let latest = match server.tables.get(&sc.pipeline.table_url(t.name)) {
        Ok(v) => v.latest().await.ok().flatten(),
        Err(_) => None,
    };
    if !latest.is_some_and(|l| (0..=l).contains(&version)) {
        return bad("Den versjonen finst ikkje.");
    }
    let row = super::Approval {
        time: server.now(),
        user: op.user.name.clone(),
        kommune: kommune.clone(),
        share: sh.name.clone(),
        schema: sc.name.clone(),
        table: t.name.to_string(),
        version,
        request_id: super::request_id(&headers),
    };
    if let Err(e) = super::record_approval(&server, &sc.pipeline, row).await {
        tracing::error!(error = %e, "approval not recorded");
        return page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Feil",
            Some(&op),
            "<p>Godkjenninga vart ikkje lagra. Prøv att.</p>",
        );
    }
    tracing::info!(user = %op.user.name, kommune, share = %sh.name, version, "list approved");
    Redirect::to(&format!("/kommune/{kommune}/overforing")).into_response()
}

/// A school's work list: its open deviations (pupil by name and masked fødselsnummer, class,
/// field, what to fix), the resolved ones with when, and its classes.
pub async fn school(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path((kommune, skule)): Path<(String, String)>,
) -> Response {
    let (op, pipelines) = match scoped(&server, &headers, &kommune) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if skule.is_empty() || !skule.bytes().all(|b| b.is_ascii_digit()) {
        return not_found(&server, &headers);
    }
    if !op.user.sees_school(&skule) {
        return forbidden();
    }
    let open = crate::report::OPEN;
    let mut body = String::new();
    let mut found = false;
    for p in &pipelines {
        let ctx = match crate::ops::session_at(p, None, None).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "school page");
                return page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Feil",
                    Some(&op),
                    "<p>Sida kunne ikkje lesast.</p>",
                );
            }
        };
        let q = |sql: String| {
            let ctx = ctx.clone();
            async move { crate::report::rows(&ctx, "avvik", &sql).await }
        };
        let pupil = "LEFT JOIN (SELECT system_id, id, fornavn, etternavn, masker_fnr(fodselsnummer) AS fnr FROM elev WHERE is_current) e ON e.system_id = a.system_id \
            LEFT JOIN (SELECT elev_id, klasse FROM elevforhold WHERE is_current AND skolenummer = '{s}') ef ON ef.elev_id = e.id";
        let pupil = pupil.replace("{s}", &skule);
        let open_rows = q(format!(
            "SELECT coalesce(nullif(concat_ws(' ', e.fornavn, e.etternavn), ''), concat('ID ', a.system_id)), coalesce(e.fnr, CASE WHEN a.felt = 'fodselsnummer' THEN a.verdi END), ef.klasse, a.felt, a.melding, a.regel, a.kjelde, CAST(a.rad AS STRING) AS r \
             FROM ({open}) a {pupil} WHERE a.skolenummer = '{skule}' ORDER BY a.regel, r"
        ))
        .await;
        let resolved = q(format!(
            "SELECT coalesce(nullif(concat_ws(' ', e.fornavn, e.etternavn), ''), concat('ID ', a.system_id)), coalesce(e.fnr, CASE WHEN a.felt = 'fodselsnummer' THEN a.verdi END), a.felt, a.regel, CAST(a.lost AS STRING) AS l \
             FROM avvik a {pupil} WHERE a.skolenummer = '{skule}' AND a.lost IS NOT NULL ORDER BY l DESC LIMIT 50"
        ))
        .await;
        let classes = crate::report::rows(
            &ctx,
            "elevforhold",
            &format!("SELECT klasse, CAST(count(*) AS STRING) FROM elevforhold WHERE is_current AND skolenummer = '{skule}' GROUP BY klasse ORDER BY klasse"),
        )
        .await;
        let (Ok(open_rows), Ok(resolved), Ok(classes)) = (open_rows, resolved, classes) else {
            return page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Feil",
                Some(&op),
                "<p>Sida kunne ikkje lesast.</p>",
            );
        };
        found |= !classes.is_empty() || !open_rows.is_empty();
        body.push_str(&table(
            &format!(
                "Opne avvik – rett dei i skulesystemet ({})",
                esc(&p.file.pipeline.name)
            ),
            &[
                "Elev",
                "Fødselsnummer",
                "Klasse",
                "Felt",
                "Kva må rettast",
                "Regel",
                "Fil",
                "Rad",
            ],
            &open_rows,
            "Ingen opne avvik.",
        ));
        body.push_str(&table(
            "Retta avvik",
            &["Elev", "Fødselsnummer", "Felt", "Regel", "Retta"],
            &resolved,
            "Ingen retta avvik enno.",
        ));
        body.push_str(&table(
            "Klassar",
            &["Klasse", "Elevar"],
            &classes,
            "Ingen klassar.",
        ));
    }
    if !found {
        return not_found(&server, &headers);
    }
    page(StatusCode::OK, &format!("Skule {skule}"), Some(&op), &body)
}

/// The run log and quality over time, with why a run failed.
pub async fn runs(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(kommune): Path<String>,
) -> Response {
    let (op, pipelines) = match scoped(&server, &headers, &kommune) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let mut body = String::new();
    for p in &pipelines {
        let r = match crate::report::build(p).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "runs page");
                return page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Feil",
                    Some(&op),
                    "<p>Sida kunne ikkje lesast.</p>",
                );
            }
        };
        let runs: Vec<Vec<Option<String>>> = r
            .kjoringar
            .iter()
            .map(|k| {
                vec![
                    Some(k.finished.clone()),
                    Some(k.steg.clone()),
                    Some(match k.status.as_str() {
                        "ok" => "ok".to_string(),
                        s => format!("{s} (feila)"),
                    }),
                    k.melding.clone(),
                ]
            })
            .collect();
        body.push_str(&table(
            &format!("Køyringar ({})", esc(&r.pipeline)),
            &["Ferdig", "Steg", "Status", "Kvifor"],
            &runs,
            "Ingen køyringar enno.",
        ));
        let quality: Vec<Vec<Option<String>>> = r
            .kvalitet_over_tid
            .iter()
            .map(|q| {
                let n = |v: Option<f64>| v.map(|v| format!("{v}"));
                vec![
                    Some(q.malt.clone()),
                    n(q.elevar),
                    n(q.ugyldige_fodselsnummer),
                    n(q.duplikat),
                ]
            })
            .collect();
        body.push_str(&table(
            "Kvalitet over tid",
            &["Målt", "Elevar", "Ugyldige fødselsnummer", "Duplikat"],
            &quality,
            "Ingen målingar enno.",
        ));
        let pupils: Vec<(String, f64)> = r
            .kvalitet_over_tid
            .iter()
            .filter_map(|q| q.elevar.map(|v| (q.malt.chars().take(16).collect(), v)))
            .collect();
        body.push_str(&crate::report::bars(
            "Elevar per køyring",
            &pupils,
            "#0b3d63",
        ));
    }
    page(
        StatusCode::OK,
        &format!("Køyringar – kommune {kommune}"),
        Some(&op),
        &body,
    )
}

/// A table with a caption, column headers and rows of text (escaped), or one row saying `empty`.
fn table(caption: &str, head: &[&str], rows: &[Vec<Option<String>>], empty: &str) -> String {
    let mut out = format!("<table><caption>{caption}</caption><tr>");
    for h in head {
        let _ = write!(out, "<th scope=col>{}</th>", esc(h));
    }
    out.push_str("</tr>");
    if rows.is_empty() {
        let _ = write!(
            out,
            "<tr><td colspan={}>{}</td></tr>",
            head.len(),
            esc(empty)
        );
    }
    for r in rows {
        out.push_str("<tr>");
        for c in r {
            let _ = write!(out, "<td>{}</td>", esc(c.as_deref().unwrap_or("")));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    out
}
