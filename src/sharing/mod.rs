//! Delivery to the county: `elevflyt serve` speaks the Delta Sharing protocol over the tables a
//! sharing file names (tokens per recipient, row restrictions by partition, signed file URLs,
//! transfer windows), every disclosure goes to `utlevering`, and `elevflyt export vigo` writes
//! the legacy semicolon list for a county still on files. Not here: how the tables are made
//! (the stages). The design: docs/ARCHITECTURE.md, "Sharing".

pub mod config;
pub mod disclosure;
pub mod export;
mod hints;
pub mod operator;
pub mod protocol;
pub mod signing;
pub mod tables;
pub mod tokens;
pub mod users;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};

use crate::config::Pipeline;
use crate::error::{Error, Result};
use config::Sharing;
use disclosure::Disclosure;
use signing::{Grant, Keys};

/// A file (the sharing file or the keys) read again when it changes on disk, so a revoked token
/// or a rotated key takes effect at once, without a restart.
struct Watched<T> {
    path: PathBuf,
    value: RwLock<(Arc<T>, Option<SystemTime>)>,
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl<T> Watched<T> {
    fn new(path: PathBuf, value: T) -> Self {
        let stamp = modified(&path);
        Watched {
            path,
            value: RwLock::new((Arc::new(value), stamp)),
        }
    }

    fn get(&self, load: impl FnOnce(&std::path::Path) -> Result<T>) -> Arc<T> {
        let now = modified(&self.path);
        {
            let v = self.value.read().unwrap_or_else(|e| e.into_inner());
            if v.1 == now {
                return v.0.clone();
            }
        }
        let mut v = self.value.write().unwrap_or_else(|e| e.into_inner());
        if v.1 != now {
            match load(&self.path) {
                Ok(new) => {
                    tracing::info!(file = %self.path.display(), "read again after a change");
                    *v = (Arc::new(new), now);
                }
                // A file caught half-edited, or an edit that broke it: keep serving what was
                // good, and say so.
                // It is read again at its next change, not at every request.
                Err(e) => {
                    tracing::error!(file = %self.path.display(), error = %e, "the changed file is not valid; keeping the previous one");
                    v.1 = now;
                }
            }
        }
        v.0.clone()
    }
}

/// The running server's state.
pub struct Server {
    sharing: Watched<Sharing>,
    keys: Watched<Keys>,
    pub tables: tables::Tables,
    log: disclosure::Log,
    /// A fixed time instead of the system clock: for tests and rehearsals of a transfer window.
    clock: Mutex<Option<DateTime<Utc>>>,
    base_url: RwLock<String>,
    /// Download URLs already logged (a client fetches one URL about ten times: footer, ranges).
    logged_downloads: Mutex<HashSet<String>>,
    /// Operators' sessions and failed logins.
    pub sessions: operator::Sessions,
    /// `godkjenning` as last read, by table URL: its version and (share, schema, table, version).
    approvals: Mutex<HashMap<String, (i64, ApprovalRows)>>,
}

/// `godkjenning` rows as (share, schema, table, version).
type ApprovalRows = Arc<Vec<(String, String, String, i64)>>;

/// An operator's approval of a version of a shared table.
pub struct Approval {
    pub time: DateTime<Utc>,
    pub user: String,
    pub kommune: String,
    pub share: String,
    pub schema: String,
    pub table: String,
    pub version: i64,
    pub request_id: String,
}

/// Appends an approval to the kommune's `godkjenning`.
pub async fn record_approval(server: &Server, pipeline: &Arc<Pipeline>, a: Approval) -> Result<()> {
    use arrow::array::{ArrayRef, Int64Array, StringArray};
    let text = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v])) };
    let batch = arrow::array::RecordBatch::try_new(
        crate::schema::GODKJENNING.arrow_schema(),
        vec![
            crate::delta::timestamps(std::iter::once(Some(a.time.timestamp_micros()))),
            text(&a.user),
            text(&a.kommune),
            text(&a.share),
            text(&a.schema),
            text(&a.table),
            Arc::new(Int64Array::from(vec![a.version])),
            text(&a.request_id),
        ],
    )?;
    server
        .log
        .append_now(pipeline, &crate::schema::GODKJENNING, batch)
        .await
}

/// The newest version of a shared table approved for `share` (at most `up_to`), from the
/// kommune's `godkjenning` (read again only when it has a new version).
pub async fn approved_version(
    server: &Server,
    pipeline: &Pipeline,
    share: &str,
    schema: &str,
    table: &str,
    up_to: i64,
) -> Option<i64> {
    let url = pipeline.table_url(crate::schema::GODKJENNING.name);
    let view = server.tables.get(&url).ok()?;
    let latest = view.latest().await.ok()??;
    let cached = server
        .approvals
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(url.as_str())
        .filter(|(v, _)| *v == latest)
        .map(|(_, rows)| rows.clone());
    let rows = match cached {
        Some(rows) => rows,
        None => {
            let t = crate::delta::open_at(&url, Some(latest), None).await.ok()?;
            let ctx = deltalake::datafusion::prelude::SessionContext::new();
            crate::delta::register(&ctx, "godkjenning", &t).await.ok()?;
            let got = crate::report::rows(
                &ctx,
                "godkjenning",
                "SELECT deling, skjema, tabell, CAST(versjon AS STRING) FROM godkjenning",
            )
            .await
            .ok()?;
            let rows: ApprovalRows = Arc::new(
                got.into_iter()
                    .filter_map(|r| {
                        Some((
                            r[0].clone()?,
                            r[1].clone()?,
                            r[2].clone()?,
                            r[3].as_deref()?.parse().ok()?,
                        ))
                    })
                    .collect(),
            );
            server
                .approvals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(url.to_string(), (latest, rows.clone()));
            rows
        }
    };
    rows.iter()
        .filter(|(sh, sc, t, v)| {
            sh.eq_ignore_ascii_case(share)
                && sc.eq_ignore_ascii_case(schema)
                && t == table
                && *v <= up_to
        })
        .map(|r| r.3)
        .max()
}

impl Server {
    pub fn sharing(&self) -> Arc<Sharing> {
        self.sharing.get(Sharing::load)
    }

    pub fn keys(&self) -> Arc<Keys> {
        self.keys.get(Keys::load_or_create)
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or_else(Utc::now)
    }

    /// Sets (or, with None, clears) the fixed time.
    pub fn set_clock(&self, t: Option<DateTime<Utc>>) {
        *self.clock.lock().unwrap_or_else(|e| e.into_inner()) = t;
    }

    /// `http(s)://host:port`, what file URLs start with.
    pub fn base_url(&self) -> String {
        self.base_url
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn disclose(&self, pipeline: &Arc<Pipeline>, d: Disclosure) {
        self.log.record(pipeline, d);
    }

    fn disclose_download(
        &self,
        pipeline: &Arc<Pipeline>,
        grant: &Grant,
        token: &str,
        restriction: Option<String>,
        request_id: String,
    ) {
        let mut seen = self
            .logged_downloads
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if seen.len() > 100_000 {
            seen.clear();
        }
        if !seen.insert(token.to_string()) {
            return;
        }
        self.disclose(
            pipeline,
            Disclosure {
                time: self.now(),
                recipient: grant.r.clone(),
                share: Some(grant.s.clone()),
                table: grant.t.clone(),
                version: Some(grant.v),
                from_version: None,
                operation: "download",
                files: 1,
                rows: grant.n,
                restriction,
                request_id,
            },
        );
    }

    /// Writes every queued disclosure now.
    pub async fn flush_disclosures(&self) {
        self.log.flush().await;
    }
}

/// The routes: the protocol under the prefix; everything else asks who is calling first.
pub fn router(server: Arc<Server>) -> Router {
    use protocol::*;
    let sharing = server.sharing();
    let t = "/shares/{share}/schemas/{schema}/tables/{table}";
    let api = Router::new()
        .route("/shares", get(list_shares))
        .route("/shares/{share}", get(get_share))
        .route("/shares/{share}/schemas", get(list_schemas))
        .route("/shares/{share}/schemas/{schema}/tables", get(list_tables))
        .route("/shares/{share}/all-tables", get(list_all_tables))
        .route(&format!("{t}/version"), get(table_version))
        .route(&format!("{t}/metadata"), get(table_metadata))
        .route(&format!("{t}/query"), post(table_query))
        .route(&format!("{t}/changes"), get(table_changes))
        .route("/files/{token}", get(download).head(download));
    let pages = Router::new()
        .route("/", get(operator::home))
        .route("/login", get(operator::login_page).post(operator::login))
        .route("/logout", post(operator::logout))
        .route("/kommune/{kommune}", get(operator::overview))
        .route("/kommune/{kommune}/overforing", get(operator::transfer))
        .route("/kommune/{kommune}/skule/{skule}", get(operator::school))
        .route("/kommune/{kommune}/koyringar", get(operator::runs))
        .route("/kommune/{kommune}/godkjenn", post(operator::approve));
    Router::new()
        .nest(&sharing.prefix, api)
        .merge(pages)
        .fallback(fallback)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn_with_state(server.clone(), around))
        .layer(DefaultBodyLimit::max(sharing.max_request_bytes))
        .with_state(server)
}

/// Every request: an id (`x-request-id`, also in `utlevering`), a time limit, one log line
/// (method, route, status, time; never a token or a file URL).
async fn around(State(server): State<Arc<Server>>, mut req: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    if let Ok(v) = HeaderValue::from_str(&id) {
        req.headers_mut().insert("x-request-id", v);
    }
    let method = req.method().clone();
    // A file URL's token is a credential until it expires: never in the log.
    let sharing = server.sharing();
    let files = format!("{}/files/", sharing.prefix);
    let signed_file = req.uri().path().starts_with(&files);
    // The operator pages check their own sessions (operator.rs); the protocol needs a token.
    let protocol = req.uri().path() == sharing.prefix
        || req
            .uri()
            .path()
            .starts_with(&format!("{}/", sharing.prefix));
    let route = match signed_file {
        true => format!("{files}…"),
        false => req.uri().path().to_string(),
    };
    let started = std::time::Instant::now();
    let limit = sharing.request_timeout;
    // Refuse by default: every protocol route but a signed file URL needs a valid bearer token
    // before any route, parameter or body is looked at.
    let caller = match protocol && !signed_file {
        true => Some(protocol::caller(&server, req.headers())),
        false => None,
    };
    let refused = match caller {
        Some(Ok(c)) => {
            req.extensions_mut().insert(Arc::new(c));
            None
        }
        Some(Err(refused)) => Some(refused),
        None => None,
    };
    let mut res = match refused {
        Some(refused) => refused.into_response(),
        None => match tokio::time::timeout(limit, next.run(req)).await {
            Ok(r) => r,
            Err(_) => protocol::ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "TIMEOUT",
                "the request took too long",
            )
            .into_response(),
        },
    };
    res = as_protocol_error(res).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert("x-request-id", v);
    }
    tracing::info!(request_id = %id, %method, route, status = res.status().as_u16(), ms = started.elapsed().as_millis() as u64, "request");
    res
}

/// An error answered by the framework (a bad query parameter, a body over the limit, an
/// unknown method) in the protocol's shape: `{"errorCode","message"}` as JSON.
async fn as_protocol_error(res: Response) -> Response {
    let status = res.status();
    let json = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error())
        || json
        || status == StatusCode::RANGE_NOT_SATISFIABLE
    {
        return res;
    }
    let body = axum::body::to_bytes(res.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let code = match status {
        StatusCode::NOT_FOUND => "RESOURCE_DOES_NOT_EXIST",
        s if s.is_server_error() => "INTERNAL_ERROR",
        _ => "INVALID_PARAMETER_VALUE",
    };
    protocol::ApiError::new(
        status,
        code,
        String::from_utf8_lossy(&body).trim().to_string(),
    )
    .into_response()
}

/// The id `around` gave this request (`x-request-id`).
pub fn request_id(headers: &axum::http::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Whether a path is one of the protocol's (under the prefix), not an operator page.
fn is_protocol(server: &Server, uri: &axum::http::Uri) -> bool {
    let prefix = server.sharing().prefix.clone();
    uri.path() == prefix || uri.path().starts_with(&format!("{prefix}/"))
}

/// Any other path: for the protocol 401 without a valid token, else 404; for the pages the login
/// page, else 404.
pub async fn fallback(
    State(server): State<Arc<Server>>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    if !is_protocol(&server, &uri) {
        return operator::not_found(&server, &headers);
    }
    match protocol::caller(&server, &headers) {
        Err(e) => e.into_response(),
        Ok(_) => protocol::ApiError::not_found("no such route").into_response(),
    }
}

/// A route with the wrong method: like [`fallback`], with 405.
pub async fn wrong_method(
    State(server): State<Arc<Server>>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    if !is_protocol(&server, &uri) {
        return operator::not_found(&server, &headers);
    }
    match protocol::caller(&server, &headers) {
        Err(e) => e.into_response(),
        Ok(_) => protocol::ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "INVALID_PARAMETER_VALUE",
            "method not allowed on this route",
        )
        .into_response(),
    }
}

/// A server that is listening.
pub struct Running {
    pub addr: SocketAddr,
    /// `http(s)://host:port/prefix`: the endpoint of profile files.
    pub endpoint: String,
    pub server: Arc<Server>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops listening, lets open requests finish, and writes the disclosure log.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.server.flush_disclosures().await;
    }
}

/// Starts the server on `listen` (port 0: any free port).
pub async fn start(sharing: Sharing, listen: SocketAddr) -> Result<Running> {
    sharing.check_listen(&listen)?;
    let keys = Keys::load_or_create(&sharing.signing_keys)?;
    let tls = match &sharing.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::Usage(format!("cannot listen on {listen}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Usage(format!("cannot listen on {listen}: {e}")))?;
    let base = sharing
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{}://{addr}", if tls.is_some() { "https" } else { "http" }));
    let prefix = sharing.prefix.clone();
    let server = Arc::new(Server {
        keys: Watched::new(sharing.signing_keys.clone(), keys),
        sharing: Watched::new(sharing.path.clone(), sharing),
        tables: tables::Tables::default(),
        log: disclosure::Log::start(format!("serve-{}", uuid::Uuid::new_v4()))?,
        clock: Mutex::new(None),
        base_url: RwLock::new(base.clone()),
        logged_downloads: Mutex::default(),
        sessions: operator::Sessions::new()?,
        approvals: Mutex::default(),
    });
    let app = router(server.clone());
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = match tls {
        None => tokio::spawn(async move {
            let done = async move {
                let _ = stopped.changed().await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(done)
                .await
            {
                tracing::error!(error = %e, "the server stopped");
            }
        }),
        Some(acceptor) => tokio::spawn(serve_tls(listener, acceptor, app, stopped)),
    };
    Ok(Running {
        addr,
        endpoint: format!("{base}{prefix}"),
        server,
        stop,
        task,
    })
}

fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let bad =
        |what: &std::path::Path, e: String| Error::Usage(format!("TLS: {}: {e}", what.display()));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, e.to_string()))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad(cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad(cert, "no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e.to_string()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Usage(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            Error::Usage(format!(
                "TLS: the certificate and key do not go together: {e}"
            ))
        })?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves HTTPS: each connection's handshake (with a time limit) on its own task.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let app = app.clone();
                connections.spawn(async move {
                    let handshake = tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp));
                    let Ok(Ok(tls)) = handshake.await else { return };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
            _ = stopped.changed() => break,
        }
    }
    // Open connections get a moment to finish.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

/// `elevflyt serve`: runs until Ctrl-C or SIGTERM, then writes the disclosure log and exits.
pub async fn serve(
    path: &std::path::Path,
    listen: Option<SocketAddr>,
    now: Option<DateTime<Utc>>,
) -> Result<()> {
    let sharing = Sharing::load(path)?;
    let listen = listen.unwrap_or(sharing.listen);
    let running = start(sharing, listen).await?;
    running.server.set_clock(now);
    if let Some(t) = now {
        tracing::warn!(clock = %t, "the server's clock is fixed (--now): for tests and rehearsals only");
    }
    // The one line a script waits for.
    println!(
        "elevflyt serve: listening on {} (endpoint {})",
        running.addr, running.endpoint
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    shutdown_signal().await;
    tracing::info!("stopping: finishing open requests and writing the disclosure log");
    running.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
