//! The sharing file (`pipelines/sharing-vestland.toml`): the server's address, the shares
//! (share → one schema per kommune → tables), the recipients with their tokens (hashes only),
//! row restrictions and transfer windows. Loading checks everything that can be checked without
//! storage, so a bad file stops `elevflyt serve` at start-up, never at a county's first request
//! (docs/ARCHITECTURE.md, "Sharing").

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::schema::Table;

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SharingFile {
    #[serde(default)]
    server: ServerSection,
    #[serde(default, rename = "share")]
    shares: Vec<ShareSection>,
    #[serde(default, rename = "recipient")]
    recipients: Vec<RecipientSection>,
    #[serde(default, rename = "user")]
    users: Vec<UserSection>,
}

/// `[[user]]`: an operator of the web pages (added by `elevflyt share user`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserSection {
    name: String,
    /// The kommuner (kommunenummer) the operator sees; nothing else.
    kommune: Vec<String>,
    /// Only these schools (skolenummer), when set.
    #[serde(default)]
    skule: Vec<String>,
    /// The password's argon2id hash (PHC string); none for a user who only comes through the
    /// trusted header of a single-sign-on proxy.
    password: Option<String>,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ServerSection {
    /// Address to listen on (`--listen` overrides it).
    listen: String,
    /// The address the recipients reach, when it is not `http(s)://<listen>` (a reverse proxy).
    public_url: Option<String>,
    /// Path prefix of the protocol's routes.
    prefix: String,
    /// How long a file URL stays valid.
    url_ttl_minutes: u64,
    /// File with the keys that sign file URLs (created on first start; the first key signs,
    /// every key is accepted, so a new key goes first and the old one stays until its URLs
    /// expire).
    signing_keys: Option<String>,
    /// PEM certificate chain and private key: the server speaks TLS.
    tls_cert: Option<String>,
    tls_key: Option<String>,
    /// Plain HTTP on an address other than loopback (behind a TLS-terminating proxy).
    allow_plain_http: bool,
    /// Longest time a request may take.
    request_timeout_seconds: u64,
    /// Largest request body accepted.
    max_request_bytes: usize,
    /// How long an operator's session lasts without a new login.
    session_minutes: u64,
    /// A header set by a single-sign-on reverse proxy with the operator's user name (off by
    /// default). Only behind a proxy that sets it and removes it from what clients send.
    trusted_user_header: Option<String>,
    /// Files of a cloud warehouse (s3, az, gs): `presign` hands out the object store's
    /// pre-signed URLs, `proxy` streams them through the server's own download route.
    cloud_files: CloudFiles,
}

/// How the files of a cloud warehouse reach a recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CloudFiles {
    #[default]
    Presign,
    Proxy,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: "127.0.0.1:8080".into(),
            public_url: None,
            prefix: "/delta-sharing".into(),
            url_ttl_minutes: 60,
            signing_keys: None,
            tls_cert: None,
            tls_key: None,
            allow_plain_http: false,
            request_timeout_seconds: 30,
            max_request_bytes: 64 * 1024,
            cloud_files: CloudFiles::Presign,
            session_minutes: 8 * 60,
            trusted_user_header: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShareSection {
    name: String,
    /// Serve only versions a kommune's operator has approved ("lista er klar").
    #[serde(default)]
    approved_only: bool,
    #[serde(rename = "schema")]
    schemas: Vec<SchemaSection>,
}

/// `[[share.schema]]`: one kommune's tables, from one pipeline's warehouse.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemaSection {
    /// Schema name; the pipeline's catalog (`bergen_kommune`) by default.
    name: Option<String>,
    /// The pipeline file (relative to this file).
    pipeline: String,
    tables: Vec<String>,
    /// Whether earlier versions (time travel) and the Change Data Feed are shared.
    #[serde(default)]
    history: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipientSection {
    name: String,
    shares: Vec<String>,
    /// Row restriction: partition column → the only value this recipient sees.
    #[serde(default)]
    rows: BTreeMap<String, String>,
    #[serde(default, rename = "token")]
    tokens: Vec<TokenSection>,
    #[serde(default, rename = "window")]
    windows: Vec<WindowSection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenSection {
    id: String,
    sha256: String,
    created: Time,
    expires: Time,
    revoked: Option<Time>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowSection {
    share: String,
    opens: Time,
    deadline: Time,
    available_until: Time,
}

/// A time as a TOML date-time or a string, with its offset (`2027-03-01T12:00:00+01:00`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Time {
    Text(String),
    Toml(toml::value::Datetime),
}

impl Time {
    fn resolve(&self, what: &str) -> std::result::Result<DateTime<Utc>, String> {
        let text = match self {
            Time::Text(s) => s.clone(),
            Time::Toml(d) => d.to_string(),
        };
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                format!("{what}: `{text}` is not a time with its offset, e.g. 2027-03-01T12:00:00+01:00")
            })
    }
}

/// The loaded, checked sharing file.
#[derive(Debug, Clone)]
pub struct Sharing {
    pub path: PathBuf,
    pub listen: SocketAddr,
    /// `http(s)://host:port` the recipients reach, without the prefix.
    pub public_url: Option<String>,
    pub prefix: String,
    pub url_ttl: chrono::Duration,
    pub signing_keys: PathBuf,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub allow_plain_http: bool,
    pub request_timeout: std::time::Duration,
    pub max_request_bytes: usize,
    pub cloud_files: CloudFiles,
    pub session: chrono::Duration,
    pub trusted_user_header: Option<axum::http::HeaderName>,
    pub shares: Vec<Share>,
    pub recipients: Vec<Recipient>,
    pub users: Vec<User>,
}

/// An operator: who may see and approve what.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub kommuner: BTreeSet<String>,
    /// Empty: every school of those kommuner.
    pub skular: BTreeSet<String>,
    /// argon2id PHC string (none: no password login).
    pub password: Option<String>,
}

impl User {
    pub fn sees_kommune(&self, kommune: &str) -> bool {
        self.kommuner.contains(kommune)
    }

    pub fn sees_school(&self, skolenummer: &str) -> bool {
        self.skular.is_empty() || self.skular.contains(skolenummer)
    }
}

#[derive(Debug, Clone)]
pub struct Share {
    pub name: String,
    pub approved_only: bool,
    pub schemas: Vec<Schema>,
}

#[derive(Debug, Clone)]
pub struct Schema {
    pub name: String,
    pub pipeline: Arc<Pipeline>,
    pub tables: Vec<&'static Table>,
    pub history: bool,
}

#[derive(Debug, Clone)]
pub struct Recipient {
    pub name: String,
    pub shares: BTreeSet<String>,
    pub rows: Vec<(String, String)>,
    pub tokens: Vec<Token>,
    /// Transfer windows by share name.
    pub windows: Vec<(String, Window)>,
}

#[derive(Debug, Clone)]
pub struct Token {
    pub id: String,
    pub sha256: [u8; 32],
    pub expires: DateTime<Utc>,
    pub revoked: Option<DateTime<Utc>>,
}

/// When a share is open to a recipient: nothing before `opens`; the newest version until
/// `deadline`; the last version committed by the deadline until `available_until`; nothing after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub opens: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
    pub available_until: DateTime<Utc>,
}

/// Names may not hold what would break a share URL (`share.schema.table`) or a path.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

impl Sharing {
    pub fn load(path: &Path) -> Result<Sharing> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: format!("cannot read the file: {e}"),
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Sharing> {
        let bad = |message: String| Error::Config {
            path: path.to_path_buf(),
            message,
        };
        let file: SharingFile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let s = &file.server;
        let listen: SocketAddr = s.listen.parse().map_err(|_| {
            bad(format!(
                "[server] listen: `{}` is not an address like 127.0.0.1:8080",
                s.listen
            ))
        })?;
        let tls = match (&s.tls_cert, &s.tls_key) {
            (Some(c), Some(k)) => Some((base.join(c), base.join(k))),
            (None, None) => None,
            _ => return Err(bad("[server] tls_cert and tls_key go together".into())),
        };
        if !s.prefix.starts_with('/') || s.prefix.ends_with('/') || s.prefix.contains("//") {
            return Err(bad(format!(
                "[server] prefix: `{}` must start with / and not end with one, e.g. /delta-sharing",
                s.prefix
            )));
        }
        if s.url_ttl_minutes == 0 || s.url_ttl_minutes > 7 * 24 * 60 {
            return Err(bad(
                "[server] url_ttl_minutes: between 1 and 10080 (7 days)".into(),
            ));
        }
        if let Some(u) = &s.public_url {
            let parsed = url::Url::parse(u)
                .map_err(|_| bad(format!("[server] public_url: `{u}` is not a URL")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.path() != "/" {
                return Err(bad(format!(
                    "[server] public_url: `{u}` must be http(s)://host[:port], without a path (the prefix is added)"
                )));
            }
        }
        let mut shares: Vec<Share> = Vec::new();
        let mut pipelines: BTreeMap<PathBuf, Arc<Pipeline>> = BTreeMap::new();
        for sh in &file.shares {
            if !valid_name(&sh.name) {
                return Err(bad(format!(
                    "share `{}`: a name has only letters a-z, digits, _ and -",
                    sh.name
                )));
            }
            if shares.iter().any(|o| o.name.eq_ignore_ascii_case(&sh.name)) {
                return Err(bad(format!("share `{}` is named twice", sh.name)));
            }
            let mut schemas: Vec<Schema> = Vec::new();
            for sc in &sh.schemas {
                let file = base.join(&sc.pipeline);
                let pipeline = match pipelines.get(&file) {
                    Some(p) => p.clone(),
                    None => {
                        let p = Arc::new(Pipeline::load(&file, None).map_err(|e| {
                            bad(format!(
                                "share `{}`: pipeline {}: {e}",
                                sh.name, sc.pipeline
                            ))
                        })?);
                        pipelines.insert(file.clone(), p.clone());
                        p
                    }
                };
                let name = sc
                    .name
                    .clone()
                    .unwrap_or_else(|| pipeline.file.pipeline.catalog.clone());
                if !valid_name(&name) {
                    return Err(bad(format!(
                        "share `{}`: schema `{name}`: a name has only letters a-z, digits, _ and -",
                        sh.name
                    )));
                }
                if schemas.iter().any(|o| o.name.eq_ignore_ascii_case(&name)) {
                    return Err(bad(format!(
                        "share `{}`: schema `{name}` is named twice",
                        sh.name
                    )));
                }
                let mut tables = Vec::new();
                for t in &sc.tables {
                    let table = crate::schema::PUBLISHED
                        .iter()
                        .find(|d| d.name == t)
                        .ok_or_else(|| {
                            bad(format!(
                                "share `{}`, schema `{name}`: no table `{t}` (tables: {})",
                                sh.name,
                                crate::schema::PUBLISHED
                                    .iter()
                                    .map(|d| d.name)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ))
                        })?;
                    tables.push(*table);
                }
                schemas.push(Schema {
                    name,
                    pipeline,
                    tables,
                    history: sc.history,
                });
            }
            shares.push(Share {
                name: sh.name.clone(),
                approved_only: sh.approved_only,
                schemas,
            });
        }
        let mut recipients: Vec<Recipient> = Vec::new();
        for r in &file.recipients {
            let what = format!("recipient `{}`", r.name);
            if !valid_name(&r.name) {
                return Err(bad(format!(
                    "{what}: a name has only letters a-z, digits, _ and -"
                )));
            }
            if recipients.iter().any(|o| o.name == r.name) {
                return Err(bad(format!("{what} is named twice")));
            }
            for name in &r.shares {
                let share = shares
                    .iter()
                    .find(|s| &s.name == name)
                    .ok_or_else(|| bad(format!("{what}: no share `{name}` in this file")))?;
                // A restriction is enforced by choosing files; that is exact only on a
                // partition column (docs/ARCHITECTURE.md, "Sharing").
                for column in r.rows.keys() {
                    for sc in &share.schemas {
                        for t in &sc.tables {
                            if !t.partition_by.contains(&column.as_str()) {
                                return Err(bad(format!(
                                    "{what}: rows restricted on `{column}`, but table `{}` in share `{name}` is not partitioned by it ({}); grant only tables partitioned by `{column}` (elevliste_vgs is, by fylkesnummer)",
                                    t.name,
                                    if t.partition_by.is_empty() {
                                        "it is not partitioned".to_string()
                                    } else {
                                        format!("it is partitioned by {}", t.partition_by.join(", "))
                                    }
                                )));
                            }
                        }
                    }
                }
            }
            let mut tokens = Vec::new();
            for t in &r.tokens {
                let mut sha = [0u8; 32];
                hex::decode_to_slice(&t.sha256, &mut sha).map_err(|_| {
                    bad(format!(
                        "{what}: token `{}`: sha256 is not 64 hex digits",
                        t.id
                    ))
                })?;
                t.created
                    .resolve(&format!("{what}: token `{}`: created", t.id))
                    .map_err(bad)?;
                tokens.push(Token {
                    id: t.id.clone(),
                    sha256: sha,
                    expires: t
                        .expires
                        .resolve(&format!("{what}: token `{}`: expires", t.id))
                        .map_err(bad)?,
                    revoked: t
                        .revoked
                        .as_ref()
                        .map(|x| x.resolve(&format!("{what}: token `{}`: revoked", t.id)))
                        .transpose()
                        .map_err(bad)?,
                });
            }
            let mut windows = Vec::new();
            for w in &r.windows {
                let at = |t: &Time, key: &str| {
                    t.resolve(&format!("{what}: window for `{}`: {key}", w.share))
                };
                if !r.shares.contains(&w.share) {
                    return Err(bad(format!(
                        "{what}: a window for share `{}`, which it is not granted",
                        w.share
                    )));
                }
                let window = Window {
                    opens: at(&w.opens, "opens").map_err(bad)?,
                    deadline: at(&w.deadline, "deadline").map_err(bad)?,
                    available_until: at(&w.available_until, "available_until").map_err(bad)?,
                };
                if !(window.opens <= window.deadline && window.deadline <= window.available_until) {
                    return Err(bad(format!(
                        "{what}: window for `{}`: opens ≤ deadline ≤ available_until does not hold",
                        w.share
                    )));
                }
                if windows
                    .iter()
                    .any(|(s, _): &(String, Window)| s == &w.share)
                {
                    return Err(bad(format!("{what}: two windows for share `{}`", w.share)));
                }
                windows.push((w.share.clone(), window));
            }
            recipients.push(Recipient {
                name: r.name.clone(),
                shares: r.shares.iter().cloned().collect(),
                rows: r.rows.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                tokens,
                windows,
            });
        }
        let mut users: Vec<User> = Vec::new();
        for u in &file.users {
            let what = format!("user `{}`", u.name);
            if !valid_name(&u.name) {
                return Err(bad(format!(
                    "{what}: a name has only letters a-z, digits, _ and -"
                )));
            }
            if users.iter().any(|o| o.name == u.name) {
                return Err(bad(format!("{what} is named twice")));
            }
            if u.kommune.is_empty() {
                return Err(bad(format!("{what}: no kommune")));
            }
            if let Some(k) = u
                .kommune
                .iter()
                .find(|k| !crate::quality::kommuner::is_kommune(k))
            {
                return Err(bad(format!("{what}: `{k}` is not a kommunenummer")));
            }
            if u.password
                .as_deref()
                .is_some_and(|p| argon2::password_hash::PasswordHash::new(p).is_err())
            {
                return Err(bad(format!(
                    "{what}: password is not an argon2 hash (set it with `elevflyt share user`)"
                )));
            }
            users.push(User {
                name: u.name.clone(),
                kommuner: u.kommune.iter().cloned().collect(),
                skular: u.skule.iter().cloned().collect(),
                password: u.password.clone(),
            });
        }
        let signing_keys = match &s.signing_keys {
            Some(p) => base.join(p),
            None => {
                let stem = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("sharing");
                base.join(format!("{stem}.keys"))
            }
        };
        let sharing = Sharing {
            path: path.to_path_buf(),
            listen,
            public_url: s
                .public_url
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_string()),
            prefix: s.prefix.clone(),
            url_ttl: chrono::Duration::minutes(s.url_ttl_minutes as i64),
            signing_keys,
            tls,
            allow_plain_http: s.allow_plain_http,
            request_timeout: std::time::Duration::from_secs(s.request_timeout_seconds.max(1)),
            max_request_bytes: s.max_request_bytes.max(1024),
            cloud_files: s.cloud_files,
            session: chrono::Duration::minutes(s.session_minutes.clamp(5, 7 * 24 * 60) as i64),
            trusted_user_header: s
                .trusted_user_header
                .as_deref()
                .map(|h| {
                    axum::http::HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                        bad(format!(
                            "[server] trusted_user_header: `{h}` is not a header name"
                        ))
                    })
                })
                .transpose()?,
            shares,
            recipients,
            users,
        };
        Ok(sharing)
    }

    /// Refuses plain HTTP on an address other than loopback unless the file allows it.
    pub fn check_listen(&self, listen: &SocketAddr) -> Result<()> {
        if self.tls.is_none() && !is_loopback(listen) && !self.allow_plain_http {
            return Err(Error::Config {
                path: self.path.clone(),
                message: format!(
                    "{listen} is not a loopback address and the server has no TLS: set tls_cert and tls_key, or allow_plain_http = true behind a TLS-terminating proxy"
                ),
            });
        }
        Ok(())
    }

    pub fn share(&self, name: &str) -> Option<&Share> {
        self.shares
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The pipelines of a kommune that the file serves (one per schema; a pipeline in several
    /// shares once).
    pub fn pipelines_of(&self, kommune: &str) -> Vec<Arc<Pipeline>> {
        let mut out: Vec<Arc<Pipeline>> = Vec::new();
        for sc in self.shares.iter().flat_map(|s| &s.schemas) {
            if sc.pipeline.kommunenummer() == kommune
                && !out.iter().any(|p| p.path == sc.pipeline.path)
            {
                out.push(sc.pipeline.clone());
            }
        }
        out
    }

    pub fn recipient(&self, name: &str) -> Option<&Recipient> {
        self.recipients.iter().find(|r| r.name == name)
    }

    /// The window of `share` for `recipient`, if the file sets one.
    pub fn window(&self, recipient: &Recipient, share: &str) -> Option<Window> {
        recipient
            .windows
            .iter()
            .find(|(s, _)| s.eq_ignore_ascii_case(share))
            .map(|(_, w)| *w)
    }
}

impl Schema {
    pub fn table(&self, name: &str) -> Option<&'static Table> {
        self.tables
            .iter()
            .copied()
            .find(|t| t.name.eq_ignore_ascii_case(name))
    }
}

impl Share {
    pub fn schema(&self, name: &str) -> Option<&Schema> {
        self.schemas
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
    }
}
