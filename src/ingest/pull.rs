//! Pulling a source from its REST API (`fint`, `oneroster-rest`): OAuth2, paging, retries and
//! limits. Every page is kept as received and becomes one raw "file" (its URL is the file name),
//! so a pulled snapshot is stored, deduplicated and standardized like files are. All pages are
//! read before anything is written: a pull that fails halfway commits nothing, and the next run
//! starts over (docs/ARCHITECTURE.md, "Pulling from an API").
//!
//! Secrets (the client secret, a password) come from the environment only; no error or log line
//! carries a token or a secret, and page URLs never hold one (the token goes in a header).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use tracing::{info, warn};

use crate::config::{AuthConfig, SourceConfig};
use crate::error::{Error, Result};
use crate::formats::{Api, Format};

/// One page as received.
pub struct Page {
    /// The URL it came from (no credentials: the token is a header).
    pub url: String,
    pub bytes: bytes::Bytes,
    pub part: &'static str,
    /// The page's number in its collection, from 0.
    pub number: u32,
    /// Records in the page, and in its whole collection as pulled.
    pub records: usize,
    pub collection_records: usize,
}

/// What a pull got, for the run summary.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PullSummary {
    pub source: String,
    pub location: String,
    pub pages: usize,
    pub records: usize,
    pub bytes: u64,
    pub requests: u32,
    /// Requests sent again after a 429, a 5xx, a timeout or a broken connection.
    pub retries: u32,
    /// New tokens fetched (the first, and after one expired).
    pub tokens: u32,
    pub seconds: f64,
    /// Nothing changed since the previous pull (no new snapshot).
    pub unchanged: bool,
}

/// The previous pull, when one is stored: its time and its collections' sizes.
pub struct Previous {
    pub as_of: DateTime<Utc>,
    pub collection_records: std::collections::HashMap<String, usize>,
}

/// The settings of one source's pulls, checked.
struct Settings {
    page_size: u32,
    timeout: Duration,
    max_retries: u32,
    max_page_bytes: u64,
}

/// The HTTP side of one pull: the client, the token and the counters.
struct Client<'s> {
    source: &'s SourceConfig,
    http: reqwest::Client,
    token: Option<(String, Instant)>,
    settings: Settings,
    summary: PullSummary,
}

/// The environment variable a secret of this source is read from (`ELEVFLYT_FINT_CLIENT_SECRET`).
pub fn secret_variable(source: &str, what: &str) -> String {
    let name: String = source
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("ELEVFLYT_{name}_{what}")
}

fn env_secret(variable: &str, what: &str, source: &str) -> Result<String> {
    match std::env::var(variable) {
        Ok(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(Error::Usage(format!(
            "source `{source}`: no {what} in the environment: set {variable} (secrets are never read from the pipeline file)"
        ))),
    }
}

/// Pulls every collection of the source's API. `None` when `previous` is known and the API
/// says nothing changed since (FINT's `sinceTimeStamp`, and every collection of the same size).
pub async fn pull(
    source: &SourceConfig,
    format: &dyn Format,
    api: &Api,
    base: &url::Url,
    previous: Option<&Previous>,
) -> Result<(Option<Vec<Page>>, PullSummary)> {
    let started = Instant::now();
    let settings = Settings {
        page_size: source
            .page_size
            .unwrap_or(api.default_page_size)
            .clamp(1, api.max_page_size),
        timeout: Duration::from_secs(source.timeout_seconds.unwrap_or(60).max(1)),
        max_retries: source.max_retries.unwrap_or(5),
        max_page_bytes: (source.max_page_mb.unwrap_or(256.0) * (1u64 << 20) as f64) as u64,
    };
    let http = reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("elevflyt/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Other(format!("source `{}`: HTTP client: {e}", source.name)))?;
    let mut c = Client {
        source,
        http,
        token: None,
        settings,
        summary: PullSummary {
            source: source.name.clone(),
            location: base.to_string(),
            ..Default::default()
        },
    };
    let base_str = base.as_str().trim_end_matches('/').to_string();
    if let (Some(prev), Some(since)) = (previous, api.since_param) {
        if c.unchanged_since(&base_str, format, api, prev).await? {
            c.summary.unchanged = true;
            c.summary.seconds = started.elapsed().as_secs_f64();
            info!(source = %source.name, since = %prev.as_of, "nothing changed since the previous pull ({since}): no new snapshot");
            return Ok((None, c.summary));
        }
    }
    let mut pages = Vec::new();
    for &(part, path, older) in api.collections {
        let first = pages.len();
        let mut path = path;
        let mut offset: u64 = 0;
        let mut number = 0u32;
        loop {
            let url = page_url(&base_str, path, api, c.settings.page_size, offset, None)?;
            let got = c.get(&url).await?;
            let (bytes, total) = match got {
                Some(g) => g,
                None if number == 0 && older.is_some_and(|o| o != path) => {
                    // The v3 name of the collection (FINT's `basisgruppe`).
                    path = older.unwrap_or(path);
                    continue;
                }
                None => {
                    return Err(c.fail(
                        &url,
                        "HTTP 404 Not Found: the API has no such collection (check `location`)",
                    ));
                }
            };
            let (records, page_total) = count(format, &url, &bytes)?;
            let total = total.or(page_total);
            c.summary.pages += 1;
            c.summary.bytes += bytes.len() as u64;
            c.summary.records += records;
            pages.push(Page {
                url: url.to_string(),
                bytes,
                part,
                number,
                records,
                collection_records: 0,
            });
            offset += records as u64;
            number += 1;
            // With a total, read up to it; without, to the first empty page (a server may give
            // fewer entries than asked for, which is no sign of the end).
            let done = match total {
                Some(t) => offset >= t || records == 0,
                None => records == 0,
            };
            if done {
                break;
            }
            if number > 1_000_000 {
                return Err(c.fail(
                    &url,
                    "more than a million pages: the API does not page (check `page_size`)",
                ));
            }
        }
        let n: usize = pages[first..].iter().map(|p| p.records).sum();
        for p in &mut pages[first..] {
            p.collection_records = n;
        }
        info!(source = %source.name, collection = part, pages = number, records = n, "pulled");
    }
    c.summary.seconds = started.elapsed().as_secs_f64();
    info!(
        source = %source.name,
        pages = c.summary.pages,
        records = c.summary.records,
        bytes = c.summary.bytes,
        requests = c.summary.requests,
        retries = c.summary.retries,
        seconds = c.summary.seconds,
        "pull finished"
    );
    Ok((Some(pages), c.summary))
}

/// The URL of one page.
fn page_url(
    base: &str,
    path: &str,
    api: &Api,
    size: u32,
    offset: u64,
    since: Option<i64>,
) -> Result<url::Url> {
    let mut url = url::Url::parse(&format!("{base}/{path}"))
        .map_err(|e| Error::Usage(format!("{base}/{path}: not a URL: {e}")))?;
    {
        let mut q = url.query_pairs_mut();
        if let (Some(p), Some(t)) = (api.since_param, since) {
            q.append_pair(p, &t.to_string());
        }
        q.append_pair(api.size_param, &size.to_string());
        q.append_pair(api.offset_param, &offset.to_string());
    }
    Ok(url)
}

/// The records of a page (the format reads it, so a page it cannot read stops the pull) and the
/// collection's size when the page says (`total_items`).
fn count(format: &dyn Format, url: &url::Url, bytes: &[u8]) -> Result<(usize, Option<u64>)> {
    #[derive(serde::Deserialize)]
    struct Total {
        #[serde(default)]
        total_items: Option<u64>,
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Error::input(url.as_str(), None, format!("the page is not UTF-8: {e}")))?;
    let parsed = format.parse(url.as_str(), text, false)?;
    let total = serde_json::from_str::<Total>(text)
        .ok()
        .and_then(|t| t.total_items);
    Ok((parsed.records.len(), total))
}

impl Client<'_> {
    fn fail(&self, url: &url::Url, what: &str) -> Error {
        Error::Other(format!("source `{}`: GET {url}: {what}", self.source.name))
    }

    /// FINT: whether every collection is as the previous pull left it: no entry changed since
    /// then (`sinceTimeStamp`) and as many entries as then (a deletion shows in no delta).
    async fn unchanged_since(
        &mut self,
        base: &str,
        format: &dyn Format,
        api: &Api,
        prev: &Previous,
    ) -> Result<bool> {
        for &(part, path, older) in api.collections {
            let Some(&before) = prev.collection_records.get(part) else {
                return Ok(false);
            };
            let mut path = path;
            let changed_url = page_url(base, path, api, 1, 0, Some(prev.as_of.timestamp_millis()))?;
            let changed = match self.get(&changed_url).await? {
                Some(g) => g,
                None => match older {
                    Some(o) => {
                        path = o;
                        let u =
                            page_url(base, path, api, 1, 0, Some(prev.as_of.timestamp_millis()))?;
                        match self.get(&u).await? {
                            Some(g) => g,
                            None => return Ok(false),
                        }
                    }
                    None => return Ok(false),
                },
            };
            let (n_changed, _) = count(format, &changed_url, &changed.0)?;
            if n_changed > 0 {
                return Ok(false);
            }
            let size_url = page_url(base, path, api, 1, 0, None)?;
            let Some((bytes, header_total)) = self.get(&size_url).await? else {
                return Ok(false);
            };
            let total = header_total.or(count(format, &size_url, &bytes)?.1);
            if total != Some(before as u64) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The body and `X-Total-Count` of a GET, `None` on 404. Retries 429, 5xx, timeouts and
    /// broken connections with backoff (honouring `Retry-After`); a 401 fetches a new token once.
    async fn get(&mut self, url: &url::Url) -> Result<Option<(bytes::Bytes, Option<u64>)>> {
        let mut attempt = 0u32;
        let mut renewed = false;
        loop {
            let mut req = self
                .http
                .get(url.clone())
                .header("Accept", "application/hal+json, application/json");
            if let Some(token) = self.token().await? {
                req = req.bearer_auth(token);
            }
            self.summary.requests += 1;
            let outcome = match req.send().await {
                Err(e) => Err(describe(&e)),
                Ok(resp) => Ok(resp),
            };
            let (why, wait) = match outcome {
                Err(why) => (why, None),
                Ok(resp) => {
                    let status = resp.status();
                    if status.is_success() {
                        let total = resp
                            .headers()
                            .get("x-total-count")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse().ok());
                        match self.body(url, resp).await {
                            Ok(b) => return Ok(Some((b, total))),
                            Err(Retry(why)) => (why, None),
                            Err(Fatal(e)) => return Err(e),
                        }
                    } else if status == StatusCode::NOT_FOUND {
                        return Ok(None);
                    } else if status == StatusCode::UNAUTHORIZED
                        && self.source.auth.is_some()
                        && !renewed
                    {
                        // The token expired (or was revoked) mid-pull: one new token.
                        info!(source = %self.source.name, url = %url, "401: fetching a new token");
                        self.token = None;
                        renewed = true;
                        continue;
                    } else if retryable(status) {
                        let wait = retry_after(resp.headers());
                        (status_text(status), wait)
                    } else {
                        let hint = match status {
                            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                                " (the API refused the credentials: check [source.auth] and the secret in the environment)"
                            }
                            _ => "",
                        };
                        return Err(self.fail(url, &format!("{}{hint}", status_text(status))));
                    }
                }
            };
            if attempt >= self.settings.max_retries {
                return Err(self.fail(
                    url,
                    &format!("{why}, after {} tries; nothing was written, the next run starts the pull over", attempt + 1),
                ));
            }
            let backoff =
                Duration::from_millis(500u64 << attempt.min(6)).min(Duration::from_secs(30));
            let wait = wait.unwrap_or(backoff);
            if wait > Duration::from_secs(300) {
                return Err(self.fail(
                    url,
                    &format!(
                        "{why}; the server asks to wait {} s (Retry-After), more than 300 s",
                        wait.as_secs()
                    ),
                ));
            }
            warn!(source = %self.source.name, url = %url, reason = %why, wait_ms = wait.as_millis() as u64, attempt = attempt + 1, "retrying");
            self.summary.retries += 1;
            attempt += 1;
            tokio::time::sleep(wait).await;
        }
    }

    /// The body of a successful answer, at most `max_page_mb`.
    async fn body(
        &self,
        url: &url::Url,
        mut resp: reqwest::Response,
    ) -> std::result::Result<bytes::Bytes, BodyError> {
        let max = self.settings.max_page_bytes;
        let too_large = || {
            Fatal(self.fail(
                url,
                &format!(
                    "the page is larger than {} (max_page_mb); ask for smaller pages with `page_size`",
                    size_text(max)
                ),
            ))
        };
        if resp.content_length().is_some_and(|n| n > max) {
            return Err(too_large());
        }
        let mut buf = bytes::BytesMut::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if buf.len() as u64 + chunk.len() as u64 > max {
                        return Err(too_large());
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(buf.freeze()),
                Err(e) => return Err(Retry(format!("the answer broke off: {}", describe(&e)))),
            }
        }
    }

    /// The bearer token, fetched when there is none or it expires within 30 s.
    async fn token(&mut self) -> Result<Option<String>> {
        let Some(auth) = &self.source.auth else {
            return Ok(None);
        };
        if let Some((t, until)) = &self.token {
            if Instant::now() + Duration::from_secs(30) < *until {
                return Ok(Some(t.clone()));
            }
        }
        let (token, lifetime) = fetch_token(&self.http, &self.source.name, auth).await?;
        self.summary.tokens += 1;
        self.token = Some((token.clone(), Instant::now() + lifetime));
        Ok(Some(token))
    }
}

use BodyError::{Fatal, Retry};

enum BodyError {
    Retry(String),
    Fatal(Error),
}

/// A byte count as people read it: `256 MiB`, `10 KiB`.
fn size_text(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.0} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.0} KiB", bytes as f64 / 1024.0)
    }
}

fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

fn status_text(status: StatusCode) -> String {
    format!(
        "HTTP {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .trim_end()
    .to_string()
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let t = DateTime::parse_from_rfc2822(v).ok()?;
    let wait = t.with_timezone(&Utc) - Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// A transport error in words, without the URL (the caller names it).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time (timeout_seconds)".into()
    } else if e.is_connect() {
        "the connection failed".into()
    } else {
        let mut s = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(inner) = source {
            s = format!("{s}: {inner}");
            source = inner.source();
        }
        s
    }
}

/// An OAuth2 token (client credentials or password grant) and its lifetime.
async fn fetch_token(
    http: &reqwest::Client,
    source: &str,
    auth: &AuthConfig,
) -> Result<(String, Duration)> {
    let secret_var = auth
        .client_secret_env
        .clone()
        .unwrap_or_else(|| secret_variable(source, "CLIENT_SECRET"));
    let secret = env_secret(&secret_var, "client secret", source)?;
    let client_id = match &auth.client_id {
        Some(id) => id.clone(),
        None => env_secret(&secret_variable(source, "CLIENT_ID"), "client id", source)?,
    };
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", &auth.grant)
        .append_pair("client_id", &client_id)
        .append_pair("client_secret", &secret);
    let mut password_var = None;
    if auth.grant == "password" {
        let var = auth
            .password_env
            .clone()
            .unwrap_or_else(|| secret_variable(source, "PASSWORD"));
        let password = env_secret(&var, "password", source)?;
        form.append_pair("username", auth.username.as_deref().unwrap_or_default())
            .append_pair("password", &password);
        password_var = Some(var);
    }
    if let Some(scope) = &auth.scope {
        form.append_pair("scope", scope);
    }
    let body = form.finish();
    let fail = |what: String| {
        let vars = match &password_var {
            Some(p) => format!("{secret_var} and {p}"),
            None => secret_var.clone(),
        };
        Error::Other(format!(
            "source `{source}`: token endpoint {}: {what}; check client_id{} in [source.auth] and {vars} in the environment",
            auth.token_url,
            if password_var.is_some() { " and username" } else { "" },
        ))
    };
    let mut attempt = 0u32;
    let resp = loop {
        let sent = http
            .post(&auth.token_url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Accept", "application/json")
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if retryable(r.status()) && attempt < 3 => {}
            Ok(r) => break r,
            Err(e) if attempt >= 3 => return Err(fail(describe(&e))),
            Err(_) => {}
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
    };
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    #[derive(serde::Deserialize)]
    struct TokenAnswer {
        access_token: Option<String>,
        expires_in: Option<serde_json::Value>,
        error: Option<String>,
    }
    let answer: Option<TokenAnswer> = serde_json::from_str(&text).ok();
    if !status.is_success() {
        // The OAuth2 error code (`invalid_client`) says what is wrong and holds no secret.
        let code = answer
            .and_then(|a| a.error)
            .filter(|e| e.len() < 64 && e.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(fail(format!("{}{code}", status_text(status))));
    }
    let Some(TokenAnswer {
        access_token: Some(token),
        expires_in,
        ..
    }) = answer
    else {
        return Err(fail("the answer has no access_token".into()));
    };
    let seconds = expires_in
        .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
        .unwrap_or(3600);
    Ok((token, Duration::from_secs(seconds)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates_and_secrets_have_their_variables() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        let later = (Utc::now() + chrono::Duration::seconds(60)).to_rfc2822();
        h.insert("retry-after", later.parse().unwrap());
        let wait = retry_after(&h).unwrap();
        assert!(
            wait > Duration::from_secs(50) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        h.insert("retry-after", "snart".parse().unwrap());
        assert_eq!(retry_after(&h), None);
        assert_eq!(
            secret_variable("fint-vest", "CLIENT_SECRET"),
            "ELEVFLYT_FINT_VEST_CLIENT_SECRET"
        );
        assert!(retryable(StatusCode::TOO_MANY_REQUESTS) && retryable(StatusCode::BAD_GATEWAY));
        assert!(!retryable(StatusCode::NOT_FOUND) && !retryable(StatusCode::UNAUTHORIZED));
        let url = url::Url::parse("http://127.0.0.1:1/utdanning/elev/elev?size=2").unwrap();
        let page = br#"{"_embedded":{"_entries":[{},{}]},"total_items":7}"#;
        assert_eq!(
            count(&crate::formats::fint::Fint, &url, page).unwrap(),
            (2, Some(7))
        );
        let url = url::Url::parse("http://127.0.0.1:1/ims/oneroster/v1p1/users").unwrap();
        let page = br#"{"users":[{}]}"#;
        let rest = &crate::formats::oneroster_rest::OneRosterRest;
        assert_eq!(count(rest, &url, page).unwrap(), (1, None));
    }
}
