//! The Delta Sharing REST protocol over the shared tables: listings, version, metadata, query,
//! changes, and the signed download route. Every route asks who is calling first: a missing,
//! wrong, expired or revoked bearer token is 401, a share that is not granted is 404 (the same
//! answer as one that does not exist), and a recipient's row restriction decides which files it
//! is told of, in every version and in the changes (docs/ARCHITECTURE.md, "Sharing").

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use object_store::ObjectStoreExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::config::{Recipient, Schema, Share, Sharing, Window};
use super::disclosure::Disclosure;
use super::signing::Grant;
use super::tables::{DataFile, Snapshot, TableView};
use super::Server;
use crate::schema::Table;

/// An error as the protocol says it: a status and `{"errorCode","message"}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    fn bad(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", message)
    }
    fn unsupported(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, "UNSUPPORTED_OPERATION", message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST", message)
    }
    fn forbidden(code: &'static str, message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }
}

impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> ApiError {
        // The detail goes to the server's log (with the request id), not to the client.
        tracing::error!(error = %e, "request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", "")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"errorCode": self.code, "message": self.message}).to_string();
        let mut r = (
            self.status,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            body,
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

type Answer = std::result::Result<Response, ApiError>;

/// The caller: the sharing file as of this request and the recipient the token belongs to. Found
/// once per request, by the refuse-by-default middleware (`sharing::around`), and handed to the
/// route as a request extension.
pub struct Caller {
    pub sharing: Arc<Sharing>,
    pub recipient: Recipient,
}

/// Who is asking, from the bearer token; 401 when nobody we know.
pub fn caller(server: &Server, headers: &HeaderMap) -> std::result::Result<Caller, ApiError> {
    let sharing = server.sharing();
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    match super::tokens::recipient_of(&sharing, token, server.now()) {
        Ok(r) => {
            let recipient = r.clone();
            Ok(Caller { sharing, recipient })
        }
        Err(refusal) => {
            tracing::info!(refusal = ?refusal, "bearer token refused");
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                refusal.message(),
            ))
        }
    }
}

impl Caller {
    fn share(&self, name: &str) -> std::result::Result<&Share, ApiError> {
        self.sharing
            .share(name)
            .filter(|s| {
                self.recipient
                    .shares
                    .iter()
                    .any(|g| g.eq_ignore_ascii_case(&s.name))
            })
            .ok_or_else(|| ApiError::not_found(format!("share `{name}` does not exist")))
    }

    fn table(
        &self,
        share: &str,
        schema: &str,
        table: &str,
    ) -> std::result::Result<(&Share, &Schema, &'static Table), ApiError> {
        let sh = self.share(share)?;
        let sc = sh.schema(schema).ok_or_else(|| {
            ApiError::not_found(format!("schema `{share}.{schema}` does not exist"))
        })?;
        let t = sc.table(table).ok_or_else(|| {
            ApiError::not_found(format!("table `{share}.{schema}.{table}` does not exist"))
        })?;
        Ok((sh, sc, t))
    }

    fn restriction(&self) -> Option<String> {
        (!self.recipient.rows.is_empty()).then(|| {
            self.recipient
                .rows
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
    }
}

// ------------------------------------------------------------------------------------ listings

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Paging {
    max_results: Option<i64>,
    page_token: Option<String>,
}

/// One page of `items` (an offset in the page token).
fn page(items: Vec<serde_json::Value>, paging: &Paging) -> Answer {
    let max = match paging.max_results {
        None => 500,
        Some(n) if (0..=1000).contains(&n) => n.max(1) as usize,
        Some(n) => return Err(ApiError::bad(format!("maxResults {n}: between 0 and 1000"))),
    };
    let start = match paging.page_token.as_deref().filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => t
            .strip_prefix("o")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n <= items.len())
            .ok_or_else(|| ApiError::bad("invalid 'nextPageToken'"))?,
    };
    let end = (start + max).min(items.len());
    let mut body = serde_json::json!({ "items": items[start..end] });
    if end < items.len() {
        body["nextPageToken"] = format!("o{end}").into();
    }
    Ok(json(&body))
}

fn json(v: &serde_json::Value) -> Response {
    // One line: the official client parses the first line only.
    (
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        v.to_string(),
    )
        .into_response()
}

fn stable_id(parts: &[&str]) -> String {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, parts.join(".").as_bytes()).to_string()
}

fn table_item(sh: &Share, sc: &Schema, t: &Table) -> serde_json::Value {
    serde_json::json!({
        "name": t.name, "schema": sc.name, "share": sh.name,
        "shareId": stable_id(&[&sh.name]), "id": stable_id(&[&sh.name, &sc.name, t.name]),
    })
}

pub async fn list_shares(
    Extension(c): Extension<Arc<Caller>>,
    Query(paging): Query<Paging>,
) -> Answer {
    let items = c
        .sharing
        .shares
        .iter()
        .filter(|s| c.recipient.shares.contains(&s.name))
        .map(|s| serde_json::json!({"name": s.name, "id": stable_id(&[&s.name])}))
        .collect();
    page(items, &paging)
}

pub async fn get_share(Extension(c): Extension<Arc<Caller>>, Path(share): Path<String>) -> Answer {
    let s = c.share(&share)?;
    Ok(json(
        &serde_json::json!({"share": {"name": s.name, "id": stable_id(&[&s.name])}}),
    ))
}

pub async fn list_schemas(
    Extension(c): Extension<Arc<Caller>>,
    Path(share): Path<String>,
    Query(paging): Query<Paging>,
) -> Answer {
    let s = c.share(&share)?;
    let items = s
        .schemas
        .iter()
        .map(|sc| serde_json::json!({"name": sc.name, "share": s.name}))
        .collect();
    page(items, &paging)
}

pub async fn list_tables(
    Extension(c): Extension<Arc<Caller>>,
    Path((share, schema)): Path<(String, String)>,
    Query(paging): Query<Paging>,
) -> Answer {
    let s = c.share(&share)?;
    let sc = s
        .schema(&schema)
        .ok_or_else(|| ApiError::not_found(format!("schema `{share}.{schema}` does not exist")))?;
    let items = sc.tables.iter().map(|t| table_item(s, sc, t)).collect();
    page(items, &paging)
}

pub async fn list_all_tables(
    Extension(c): Extension<Arc<Caller>>,
    Path(share): Path<String>,
    Query(paging): Query<Paging>,
) -> Answer {
    let s = c.share(&share)?;
    let items = s
        .schemas
        .iter()
        .flat_map(|sc| sc.tables.iter().map(move |t| table_item(s, sc, t)))
        .collect();
    page(items, &paging)
}

// ------------------------------------------------------------------------ windows and versions

/// The versions a recipient may read of a table now, under its transfer window.
struct Served {
    /// The newest version it may read.
    newest: i64,
    /// The window's deadline when it has passed (the share is pinned to `newest`).
    closed: Option<DateTime<Utc>>,
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The version `recipient` reads of a shared table now, or the error code that says why it
/// reads none (for the operator pages).
pub async fn served_version(
    server: &Server,
    sharing: &Arc<Sharing>,
    recipient: &Recipient,
    (share, schema): (&Share, &Schema),
    view: &TableView,
    table: &str,
) -> std::result::Result<i64, &'static str> {
    let c = Caller {
        sharing: sharing.clone(),
        recipient: recipient.clone(),
    };
    served(server, &c, (share, schema), view, table)
        .await
        .map(|s| s.newest)
        .map_err(|e| e.code)
}

async fn served(
    server: &Server,
    c: &Caller,
    (share, schema): (&Share, &Schema),
    view: &TableView,
    table: &str,
) -> std::result::Result<Served, ApiError> {
    let latest = view
        .latest()
        .await?
        .ok_or_else(|| ApiError::not_found(format!("table `{table}` has no data yet")))?;
    let served = within_window(server, c, share, view, table, latest).await?;
    if !share.approved_only {
        return Ok(served);
    }
    // Only what the kommune has approved, within the window.
    let approved = super::approved_version(
        server,
        &schema.pipeline,
        &share.name,
        &schema.name,
        table,
        served.newest,
    )
    .await
    .ok_or_else(|| {
        ApiError::forbidden(
            "NOT_APPROVED",
            format!(
                "the kommune has not approved a version of `{table}` in share `{}` yet",
                share.name
            ),
        )
    })?;
    Ok(Served {
        newest: approved,
        closed: served.closed,
    })
}

/// [`served`] by the transfer window alone.
async fn within_window(
    server: &Server,
    c: &Caller,
    share: &Share,
    view: &TableView,
    table: &str,
    latest: i64,
) -> std::result::Result<Served, ApiError> {
    let Some(Window {
        opens,
        deadline,
        available_until,
    }) = c.sharing.window(&c.recipient, &share.name)
    else {
        return Ok(Served {
            newest: latest,
            closed: None,
        });
    };
    let now = server.now();
    if now < opens {
        return Err(ApiError::forbidden(
            "TRANSFER_NOT_OPEN",
            format!(
                "the transfer of share `{}` opens {}",
                share.name,
                stamp(opens)
            ),
        ));
    }
    if now >= available_until {
        return Err(ApiError::forbidden(
            "TRANSFER_ENDED",
            format!(
                "the transfer of share `{}` closed at its deadline {} and was available until {}",
                share.name,
                stamp(deadline),
                stamp(available_until)
            ),
        ));
    }
    if now <= deadline {
        return Ok(Served {
            newest: latest,
            closed: None,
        });
    }
    match view.version_at(deadline.timestamp_millis(), latest).await? {
        Some(v) => Ok(Served {
            newest: v,
            closed: Some(deadline),
        }),
        None => Err(ApiError::forbidden(
            "TRANSFER_ENDED",
            format!(
                "the transfer of share `{}` closed at its deadline {} before any version of `{table}` was committed",
                share.name,
                stamp(deadline)
            ),
        )),
    }
}

/// The headers every table answer carries.
fn table_headers(version: i64, served: &Served, ndjson: bool) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("delta-table-version", HeaderValue::from(version));
    if ndjson {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson; charset=utf-8"),
        );
        h.insert(
            "delta-sharing-capabilities",
            HeaderValue::from_static("responseformat=parquet"),
        );
    }
    if let Some(deadline) = served.closed {
        if let Ok(v) = HeaderValue::from_str(&format!(
            "closed; deadline={}; version={}",
            stamp(deadline),
            served.newest
        )) {
            h.insert("elevflyt-transfer", v);
        }
    }
    h
}

/// Refuses a client that cannot take the parquet response format.
fn check_format(headers: &HeaderMap) -> std::result::Result<(), ApiError> {
    let Some(caps) = headers
        .get("delta-sharing-capabilities")
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    for part in caps.split(';') {
        if let Some((k, v)) = part.split_once('=') {
            if k.trim().eq_ignore_ascii_case("responseformat")
                && !v
                    .split(',')
                    .any(|f| f.trim().eq_ignore_ascii_case("parquet"))
            {
                return Err(ApiError::unsupported(
                    "this server answers in the parquet response format only",
                ));
            }
        }
    }
    Ok(())
}

fn parse_time(text: &str, what: &str) -> std::result::Result<i64, ApiError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            ApiError::bad(format!(
                "{what}: `{text}` is not an ISO 8601 time such as 2026-11-01T00:00:00Z"
            ))
        })
}

/// The version a request asks for (`version` or `timestamp`), within what it may read.
async fn asked_version(
    view: &TableView,
    schema: &Schema,
    served: &Served,
    version: Option<i64>,
    timestamp: Option<&str>,
) -> std::result::Result<(i64, bool), ApiError> {
    if version.is_none() && timestamp.is_none() {
        return Ok((served.newest, false));
    }
    if !schema.history {
        return Err(ApiError::unsupported(
            "earlier versions of this table are not shared (history sharing is not enabled)",
        ));
    }
    let v = match (version, timestamp) {
        (Some(_), Some(_)) => return Err(ApiError::bad("give `version` or `timestamp`, not both")),
        (Some(v), None) => v,
        (None, Some(t)) => {
            let t = parse_time(t, "timestamp")?;
            view.version_at(t, served.newest).await?.ok_or_else(|| {
                ApiError::bad("no version of the table was committed at or before that timestamp")
            })?
        }
        (None, None) => served.newest,
    };
    if v < 0 || v > served.newest {
        return Err(ApiError::bad(format!(
            "version {v} is not available (versions 0 to {} are)",
            served.newest
        )));
    }
    Ok((v, true))
}

// ---------------------------------------------------------------------------- table answers

/// The protocol and metaData lines (parquet format). Internal table properties and column
/// metadata other than comments stay private; size and file counts are left out (for a
/// restricted recipient they would describe other counties' data).
fn head_lines(
    snap: &Snapshot,
    history: bool,
    version: Option<i64>,
) -> std::result::Result<String, ApiError> {
    if snap.min_reader_version > 1 {
        return Err(ApiError::unsupported(
            "the table needs a newer Delta reader than the parquet response format allows",
        ));
    }
    let m = &snap.metadata;
    let schema_string = m["schemaString"]
        .as_str()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        .map(|mut s| {
            if let Some(fields) = s["fields"].as_array_mut() {
                for f in fields {
                    let comment = f["metadata"]["comment"].clone();
                    f["metadata"] = match comment {
                        serde_json::Value::Null => serde_json::json!({}),
                        c => serde_json::json!({ "comment": c }),
                    };
                }
            }
            s.to_string()
        })
        .unwrap_or_default();
    let configuration = if history && snap.change_data_feed {
        serde_json::json!({"enableChangeDataFeed": "true"})
    } else {
        serde_json::json!({})
    };
    let mut meta = serde_json::json!({
        "id": m["id"],
        "format": {"provider": "parquet"},
        "schemaString": schema_string,
        "partitionColumns": m["partitionColumns"],
        "configuration": configuration,
    });
    for key in ["name", "description"] {
        if m[key].is_string() {
            meta[key] = m[key].clone();
        }
    }
    if let Some(v) = version {
        meta["version"] = v.into();
    }
    Ok(format!(
        "{}\n{}\n",
        serde_json::json!({"protocol": {"minReaderVersion": 1}}),
        serde_json::json!({ "metaData": meta })
    ))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct VersionParams {
    starting_timestamp: Option<String>,
}

pub async fn table_version(
    State(server): State<Arc<Server>>,
    Extension(c): Extension<Arc<Caller>>,
    Path((share, schema, table)): Path<(String, String, String)>,
    Query(q): Query<VersionParams>,
) -> Answer {
    let (sh, sc, t) = c.table(&share, &schema, &table)?;
    let view = server.tables.get(&sc.pipeline.table_url(t.name))?;
    let served = served(&server, &c, (sh, sc), &view, t.name).await?;
    let v = match q.starting_timestamp {
        None => served.newest,
        Some(ts) => {
            if !sc.history {
                return Err(ApiError::unsupported(
                    "startingTimestamp needs history sharing, which is not enabled for this table",
                ));
            }
            let ts = parse_time(&ts, "startingTimestamp")?;
            view.version_from(ts, served.newest).await?.ok_or_else(|| {
                ApiError::bad("no version was committed at or after startingTimestamp")
            })?
        }
    };
    Ok((table_headers(v, &served, false), "").into_response())
}

#[derive(Deserialize, Default)]
pub struct MetadataParams {
    version: Option<i64>,
    timestamp: Option<String>,
}

pub async fn table_metadata(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Extension(c): Extension<Arc<Caller>>,
    Path((share, schema, table)): Path<(String, String, String)>,
    Query(q): Query<MetadataParams>,
) -> Answer {
    check_format(&headers)?;
    let (sh, sc, t) = c.table(&share, &schema, &table)?;
    let view = server.tables.get(&sc.pipeline.table_url(t.name))?;
    let served = served(&server, &c, (sh, sc), &view, t.name).await?;
    let (v, travelled) =
        asked_version(&view, sc, &served, q.version, q.timestamp.as_deref()).await?;
    let snap = view.snapshot(v).await?;
    let body = head_lines(&snap, sc.history, travelled.then_some(v))?;
    Ok((table_headers(v, &served, true), body).into_response())
}

/// The body of a query request (every key optional).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct QueryBody {
    json_predicate_hints: Option<String>,
    version: Option<i64>,
    timestamp: Option<String>,
    starting_version: Option<i64>,
    ending_version: Option<i64>,
    max_files: Option<i64>,
    page_token: Option<String>,
}

pub async fn table_query(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Extension(c): Extension<Arc<Caller>>,
    Path((share, schema, table)): Path<(String, String, String)>,
    body: Bytes,
) -> Answer {
    check_format(&headers)?;
    let (sh, sc, t) = c.table(&share, &schema, &table)?;
    let q: QueryBody = if body.iter().all(u8::is_ascii_whitespace) {
        QueryBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "MALFORMED_REQUEST",
                format!("the body is not a query: {e}"),
            )
        })?
    };
    if q.starting_version.is_some() || q.ending_version.is_some() {
        return Err(ApiError::unsupported(
            "streaming queries (startingVersion) are not served; use the changes route",
        ));
    }
    if q.max_files.is_some() || q.page_token.is_some() {
        return Err(ApiError::unsupported(
            "paged queries (maxFiles, pageToken) are not served",
        ));
    }
    let view = server.tables.get(&sc.pipeline.table_url(t.name))?;
    let served = served(&server, &c, (sh, sc), &view, t.name).await?;
    let (v, travelled) =
        asked_version(&view, sc, &served, q.version, q.timestamp.as_deref()).await?;
    let snap = view.snapshot(v).await?;
    let hint = q
        .json_predicate_hints
        .as_deref()
        .and_then(|h| serde_json::from_str::<serde_json::Value>(h).ok());
    let mut out = head_lines(&snap, sc.history, travelled.then_some(v))?;
    let timestamp = match travelled {
        true => view.commit(v).await?.map(|c| c.timestamp),
        false => None,
    };
    let expires = server.now() + c.sharing.url_ttl;
    let (mut files, mut rows) = (0i64, 0i64);
    for f in snap
        .files
        .iter()
        .filter(|f| f.allowed(&c.recipient.rows))
        .filter(|f| {
            hint.as_ref()
                .is_none_or(|h| super::hints::keeps(h, &f.partition_values))
        })
    {
        let mut line = file_fields(&server, &c, (sh, sc, t), &view, f, v, expires).await?;
        if travelled {
            line["version"] = v.into();
            if let Some(ts) = timestamp {
                line["timestamp"] = ts.into();
            }
        }
        out.push_str(&serde_json::json!({ "file": line }).to_string());
        out.push('\n');
        files += 1;
        rows += f.rows;
    }
    server.disclose(
        &sc.pipeline,
        Disclosure {
            time: server.now(),
            recipient: c.recipient.name.clone(),
            share: Some(sh.name.clone()),
            table: t.name.to_string(),
            version: Some(v),
            from_version: None,
            operation: "query",
            files,
            rows,
            restriction: c.restriction(),
            request_id: super::request_id(&headers),
        },
    );
    Ok((table_headers(v, &served, true), out).into_response())
}

/// The fields of a file line: a signed URL, a stable id, partition values, size, stats. The URL
/// is the server's own download route, or for a cloud warehouse (with `cloud_files = "presign"`)
/// the object store's pre-signed URL; either is minted only for a file the recipient may read.
async fn file_fields(
    server: &Server,
    c: &Caller,
    (sh, sc, t): (&Share, &Schema, &Table),
    view: &TableView,
    f: &DataFile,
    version: i64,
    expires: DateTime<Utc>,
) -> std::result::Result<serde_json::Value, ApiError> {
    let url = match presigned(c, view, f).await? {
        Some(url) => url,
        None => {
            let token = server.keys().sign(&Grant {
                k: String::new(),
                r: c.recipient.name.clone(),
                s: sh.name.clone(),
                c: sc.name.clone(),
                t: t.name.to_string(),
                p: f.path.clone(),
                n: f.rows,
                v: version,
                e: expires.timestamp_millis(),
            });
            format!(
                "{}{}/files/{token}?sp=r",
                server.base_url(),
                c.sharing.prefix
            )
        }
    };
    let mut line = serde_json::json!({
        "url": url,
        "id": hex::encode(&Sha256::digest(f.path.as_bytes())[..16]),
        "partitionValues": f.partition_values,
        "size": f.size,
        "expirationTimestamp": expires.timestamp_millis(),
    });
    if let Some(stats) = &f.stats {
        line["stats"] = stats.clone().into();
    }
    Ok(line)
}

/// The object store's pre-signed URL of a file of a cloud warehouse, when the server hands
/// those out.
async fn presigned(
    c: &Caller,
    view: &TableView,
    f: &DataFile,
) -> std::result::Result<Option<String>, ApiError> {
    if c.sharing.cloud_files != super::config::CloudFiles::Presign {
        return Ok(None);
    }
    let Some(signer) = crate::storage::signer_for(&view.url)? else {
        return Ok(None);
    };
    let (_, location) = view
        .file_location(&f.path)
        .ok_or_else(|| ApiError::unsupported("the table has a file path that cannot be shared"))?;
    let ttl = c
        .sharing
        .url_ttl
        .to_std()
        .unwrap_or(std::time::Duration::from_secs(3600));
    let url = signer
        .signed_url(Method::GET, &location, ttl)
        .await
        .map_err(crate::Error::from)?;
    Ok(Some(url.to_string()))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ChangesParams {
    starting_version: Option<i64>,
    starting_timestamp: Option<String>,
    ending_version: Option<i64>,
    ending_timestamp: Option<String>,
}

pub async fn table_changes(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Extension(c): Extension<Arc<Caller>>,
    Path((share, schema, table)): Path<(String, String, String)>,
    Query(q): Query<ChangesParams>,
) -> Answer {
    check_format(&headers)?;
    let (sh, sc, t) = c.table(&share, &schema, &table)?;
    if !sc.history {
        return Err(ApiError::unsupported(
            "changes are not shared for this table (history sharing is not enabled)",
        ));
    }
    let view = server.tables.get(&sc.pipeline.table_url(t.name))?;
    let served = served(&server, &c, (sh, sc), &view, t.name).await?;
    let start = match (q.starting_version, q.starting_timestamp.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad(
                "give startingVersion or startingTimestamp, not both",
            ))
        }
        (None, None) => {
            return Err(ApiError::bad(
                "startingVersion or startingTimestamp is required",
            ))
        }
        (Some(v), None) => v,
        (None, Some(ts)) => {
            let ts = parse_time(ts, "startingTimestamp")?;
            view.version_from(ts, served.newest).await?.ok_or_else(|| {
                ApiError::bad("startingTimestamp is after the last version that may be read")
            })?
        }
    };
    let end = match (q.ending_version, q.ending_timestamp.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad(
                "give endingVersion or endingTimestamp, not both",
            ))
        }
        (Some(v), None) => v.min(served.newest),
        (None, Some(ts)) => {
            let ts = parse_time(ts, "endingTimestamp")?;
            view.version_at(ts, served.newest).await?.ok_or_else(|| {
                ApiError::bad("no version was committed at or before endingTimestamp")
            })?
        }
        (None, None) => served.newest,
    };
    if start < 0 || start > served.newest {
        return Err(ApiError::bad(format!(
            "startingVersion {start} is not available (versions 0 to {} are)",
            served.newest
        )));
    }
    if end < start {
        return Err(ApiError::bad(format!(
            "the ending version {end} is before the starting version {start}"
        )));
    }
    for v in [start, end] {
        if !view.snapshot(v).await?.change_data_feed {
            return Err(ApiError::bad(format!(
                "change data was not recorded for version {v}"
            )));
        }
    }
    let snap = view.snapshot(end).await?;
    let mut out = head_lines(&snap, true, None)?;
    let expires = server.now() + c.sharing.url_ttl;
    let (mut files, mut rows) = (0i64, 0i64);
    for v in start..=end {
        let commit = view.commit(v).await?.ok_or_else(|| {
            ApiError::bad(format!(
                "the log of version {v} has been cleaned up; ask from a later version"
            ))
        })?;
        let lines: Vec<(&str, &DataFile)> = if commit.cdc.is_empty() {
            commit
                .adds
                .iter()
                .map(|f| ("add", f))
                .chain(commit.removes.iter().map(|f| ("remove", f)))
                .collect()
        } else {
            commit.cdc.iter().map(|f| ("cdf", f)).collect()
        };
        for (kind, f) in lines
            .into_iter()
            .filter(|(_, f)| f.allowed(&c.recipient.rows))
        {
            let mut line = file_fields(&server, &c, (sh, sc, t), &view, f, v, expires).await?;
            line["version"] = v.into();
            line["timestamp"] = commit.timestamp.into();
            if kind != "add" {
                if let Some(o) = line.as_object_mut() {
                    o.remove("stats");
                }
            }
            out.push_str(&serde_json::json!({ kind: line }).to_string());
            out.push('\n');
            files += 1;
            rows += f.rows;
        }
    }
    server.disclose(
        &sc.pipeline,
        Disclosure {
            time: server.now(),
            recipient: c.recipient.name.clone(),
            share: Some(sh.name.clone()),
            table: t.name.to_string(),
            version: Some(end),
            from_version: Some(start),
            operation: "changes",
            files,
            rows,
            restriction: c.restriction(),
            request_id: super::request_id(&headers),
        },
    );
    Ok((table_headers(start, &served, true), out).into_response())
}

// ----------------------------------------------------------------------------- file download

/// `GET`/`HEAD …/files/<token>`: a file the token grants, with `Range` (one range) → 206. No
/// bearer token: the signature is the credential; a bad or expired one is 403.
pub async fn download(
    State(server): State<Arc<Server>>,
    method: Method,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Answer {
    let denied = |m: &str| ApiError::forbidden("PERMISSION_DENIED", m.to_string());
    let grant = server
        .keys()
        .verify(&token)
        .ok_or_else(|| denied("the file URL is not valid"))?;
    if grant.e <= server.now().timestamp_millis() {
        return Err(denied(
            "the file URL has expired: query the table again for a new one",
        ));
    }
    let sharing = server.sharing();
    let recipient = sharing
        .recipient(&grant.r)
        .filter(|r| r.shares.iter().any(|s| s.eq_ignore_ascii_case(&grant.s)))
        .ok_or_else(|| denied("the file URL's recipient no longer has this share"))?;
    let c = Caller {
        sharing: sharing.clone(),
        recipient: recipient.clone(),
    };
    let (sh, sc, t) = c
        .table(&grant.s, &grant.c, &grant.t)
        .map_err(|_| denied("the file URL's table is no longer shared"))?;
    if let Some(w) = sharing.window(recipient, &sh.name) {
        if server.now() >= w.available_until {
            return Err(denied("the transfer has ended"));
        }
    }
    // The token binds the file; the recipient's restriction is checked on its path again.
    let in_partition = c
        .recipient
        .rows
        .iter()
        .all(|(k, v)| grant.p.split('/').any(|part| part == format!("{k}={v}")));
    if !in_partition {
        return Err(denied("the file URL is not valid"));
    }
    let view = server.tables.get(&sc.pipeline.table_url(t.name))?;
    let (store, location) = view
        .file_location(&grant.p)
        .ok_or_else(|| denied("the file URL is not valid"))?;
    let meta = match store.head(&location).await {
        Ok(m) => m,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(ApiError::not_found(
                "the file is gone (the table was maintained); query the table again",
            ))
        }
        Err(e) => return Err(crate::Error::from(e).into()),
    };
    let size = meta.size;
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(r) => match parse_range(r, size) {
            Some(r) => Some(r),
            None => {
                return Ok((
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [(header::CONTENT_RANGE, format!("bytes */{size}"))],
                )
                    .into_response())
            }
        },
    };
    let (status, start, end) = match range {
        Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b),
        None => (StatusCode::OK, 0, size),
    };
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if range.is_some() {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    if method == Method::HEAD {
        return Ok((status, h).into_response());
    }
    server.disclose_download(
        &sc.pipeline,
        &grant,
        &token,
        c.restriction(),
        super::request_id(&headers),
    );
    let body = if end > start {
        use futures::StreamExt;
        let got = store
            .get_opts(
                &location,
                object_store::GetOptions {
                    range: Some(object_store::GetRange::Bounded(start..end)),
                    ..Default::default()
                },
            )
            .await
            .map_err(crate::Error::from)?;
        Body::from_stream(got.into_stream().map(|r| r.map_err(std::io::Error::other)))
    } else {
        Body::empty()
    };
    Ok((status, h, body).into_response())
}

/// One `bytes=` range as `start..end` (end exclusive) within `size`; None when it cannot be
/// satisfied or is not one range.
fn parse_range(header: &str, size: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 {
            return None;
        }
        (size.saturating_sub(n), size)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            size
        } else {
            b.parse::<u64>().ok()?.saturating_add(1).min(size)
        };
        (start, end)
    };
    (start < end && start < size).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 10)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 100)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 100)));
        assert_eq!(parse_range("bytes=95-200", 100), Some((95, 100)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("lines=0-1", 100), None);
    }
}
