//! Object storage: turning pipeline locations into URLs and object stores, listing and reading
//! source files. One store per bucket/container is shared by ingest and the Delta tables, so that
//! `memory://` warehouses live for the whole process (tests use them).
//!
//! Credentials come from each cloud's usual environment variables (`AWS_*`, `AZURE_*`,
//! `GOOGLE_*`), never from the pipeline file.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::path::Path as ObjPath;
use object_store::{DynObjectStore, ObjectStore, ObjectStoreExt};
use url::Url;

use crate::error::{Error, Result};

mod guarded;
mod mapped;
pub use mapped::pages_of;

pub use guarded::Watch;

/// Resolves a location from a pipeline file: a URL with a known scheme is taken as it is, anything
/// else is a local path relative to `base`.
pub fn resolve_location(location: &str, base: &Path) -> std::result::Result<Url, String> {
    if let Ok(u) = Url::parse(location) {
        if u.scheme().len() > 1 {
            return match u.scheme() {
                "file" | "memory" | "s3" | "s3a" | "az" | "abfs" | "abfss" | "azure" | "gs" => {
                    Ok(u)
                }
                other => Err(format!(
                    "unsupported scheme `{other}://` in `{location}` (use a path, file://, s3://, az://, abfss://, gs:// or memory://)"
                )),
            };
        }
    }
    let p = Path::new(location);
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| e.to_string())?
            .join(base)
            .join(p)
    };
    let norm = normalize_path(&abs);
    Url::from_directory_path(&norm).map_err(|_| format!("not a usable path: `{location}`"))
}

/// Removes `.` and `..` without touching the file system (the folder may not exist yet).
fn normalize_path(p: &Path) -> std::path::PathBuf {
    let mut out = std::path::PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The object store holding `url`, rooted at its bucket (or the file system root).
pub fn store_for(url: &Url) -> Result<Arc<DynObjectStore>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<DynObjectStore>>>> = OnceLock::new();
    let key = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    let mut stores = STORES
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| Error::Other("object store registry poisoned".into()))?;
    if let Some(s) = stores.get(&key) {
        return Ok(s.clone());
    }
    let store: Arc<DynObjectStore> = match url.scheme() {
        "file" => Arc::new(mapped::MappedLocal::default()),
        "memory" => Arc::new(InMemory::new()),
        "s3" | "s3a" => {
            require_credentials(url)?;
            Arc::new(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry())
                    .build()?,
            )
        }
        "az" | "abfs" | "abfss" | "azure" => {
            require_credentials(url)?;
            Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry())
                    .build()?,
            )
        }
        "gs" => {
            require_credentials(url)?;
            Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry())
                    .build()?,
            )
        }
        other => {
            return Err(Error::Usage(format!(
                "unsupported storage scheme `{other}`"
            )))
        }
    };
    stores.insert(key, store.clone());
    Ok(store)
}

/// The store source exports are copied from: [`store_for`]'s, except that local files are
/// copied into memory, not mapped without a guard (`mapped.rs`): an export its producer cuts
/// short while it is read must give a changed file, not a fault. [`read_unchanged`] maps large
/// local exports under a guard (`guarded.rs`) before it falls back to this store.
pub fn source_store_for(url: &Url) -> Result<Arc<DynObjectStore>> {
    static LOCAL: OnceLock<Arc<DynObjectStore>> = OnceLock::new();
    match url.scheme() {
        "file" => Ok(LOCAL
            .get_or_init(|| Arc::new(object_store::local::LocalFileSystem::new()))
            .clone()),
        _ => store_for(url),
    }
}

/// What signs URLs for a cloud location (S3, Azure, GCS), rooted at its bucket; None for a
/// local or in-memory store, which has no such URLs. Built like [`store_for`]'s stores, from the
/// environment, once per bucket.
pub fn signer_for(url: &Url) -> Result<Option<Arc<dyn object_store::signer::Signer>>> {
    type Signers = HashMap<String, Arc<dyn object_store::signer::Signer>>;
    static SIGNERS: OnceLock<Mutex<Signers>> = OnceLock::new();
    if matches!(url.scheme(), "file" | "memory") {
        return Ok(None);
    }
    let key = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    let mut signers = SIGNERS
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| Error::Other("URL signer registry poisoned".into()))?;
    if let Some(s) = signers.get(&key) {
        return Ok(Some(s.clone()));
    }
    require_credentials(url)?;
    let signer: Arc<dyn object_store::signer::Signer> = match url.scheme() {
        "s3" | "s3a" => Arc::new(
            object_store::aws::AmazonS3Builder::from_env()
                .with_url(url.as_str())
                .build()?,
        ),
        "az" | "abfs" | "abfss" | "azure" => Arc::new(
            object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(url.as_str())
                .build()?,
        ),
        "gs" => Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(url.as_str())
                .build()?,
        ),
        other => {
            return Err(Error::Usage(format!(
                "unsupported storage scheme `{other}`"
            )))
        }
    };
    signers.insert(key, signer.clone());
    Ok(Some(signer))
}

/// Retries of a cloud request: a few, within a minute (the default retries for minutes, which a
/// scheduled job and a dry run should not wait for when storage is unreachable).
fn retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(60),
        ..Default::default()
    }
}

/// The environment variables that give each cloud its credentials; any one group is enough.
/// Without one, the provider's client would ask the cloud's instance metadata service
/// (169.254.169.254) and fail far from the cause; that is allowed only when asked for
/// (`AWS_METADATA_ENDPOINT`, `AZURE_MSI_ENDPOINT`, `GOOGLE_METADATA_ENDPOINT`… set).
const CREDENTIALS: &[(&str, &[&[&str]], &str)] = &[
    (
        "s3",
        &[
            &["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"],
            &["AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"],
            &["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"],
            &["AWS_CONTAINER_CREDENTIALS_FULL_URI"],
            &["AWS_SKIP_SIGNATURE"],
            &["AWS_METADATA_ENDPOINT"],
        ],
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (with AWS_REGION, and AWS_ENDPOINT for \
         S3-compatible storage); on a machine with an instance role set AWS_METADATA_ENDPOINT",
    ),
    (
        "azure",
        &[
            &["AZURE_STORAGE_ACCOUNT_KEY"],
            &["AZURE_STORAGE_ACCESS_KEY"],
            &["AZURE_STORAGE_SAS_KEY"],
            &["AZURE_STORAGE_TOKEN"],
            &["AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID"],
            &["AZURE_FEDERATED_TOKEN_FILE"],
            &["AZURE_STORAGE_USE_EMULATOR"],
            &["AZURE_SKIP_SIGNATURE"],
            &["AZURE_MSI_ENDPOINT"],
            &["AZURE_USE_AZURE_CLI"],
        ],
        "set AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY (or AZURE_STORAGE_SAS_KEY, or \
         AZURE_CLIENT_ID, AZURE_CLIENT_SECRET and AZURE_TENANT_ID); with a managed identity set \
         AZURE_MSI_ENDPOINT",
    ),
    (
        "gs",
        &[
            &["GOOGLE_SERVICE_ACCOUNT"],
            &["GOOGLE_SERVICE_ACCOUNT_PATH"],
            &["GOOGLE_SERVICE_ACCOUNT_KEY"],
            &["GOOGLE_APPLICATION_CREDENTIALS"],
            &["GOOGLE_SKIP_SIGNATURE"],
            &["GOOGLE_METADATA_ENDPOINT"],
        ],
        "set GOOGLE_APPLICATION_CREDENTIALS (or GOOGLE_SERVICE_ACCOUNT_PATH) to a service-account \
         key file; on a machine with a service account set GOOGLE_METADATA_ENDPOINT",
    ),
];

/// Refuses a cloud location when the environment gives no credentials for it (see
/// [`CREDENTIALS`]), naming the variables to set. Nothing is sent anywhere.
fn require_credentials(url: &Url) -> Result<()> {
    let cloud = match url.scheme() {
        "s3" | "s3a" => "s3",
        "gs" => "gs",
        _ => "azure",
    };
    let Some((_, groups, hint)) = CREDENTIALS.iter().find(|(c, _, _)| *c == cloud) else {
        return Ok(());
    };
    let set = |v: &&str| std::env::var(v).is_ok_and(|x| !x.trim().is_empty());
    if groups.iter().any(|g| g.iter().all(set)) {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "{url}: no credentials for it in the environment: {hint}"
    )))
}

/// Checks that a location can be read (listed) before a run relies on it, so that a dry run
/// says what a real run would meet: missing credentials, an unknown bucket, no network. A local
/// location that does not exist yet is fine unless a file stands where a folder of its path
/// must be created.
pub async fn check_access(url: &Url, what: &str) -> Result<()> {
    if url.scheme() == "file" {
        let Ok(path) = url.to_file_path() else {
            return Err(Error::Usage(format!("{what}: not a local path: {url}")));
        };
        let mut p = path.as_path();
        while !p.exists() {
            match p.parent() {
                Some(parent) => p = parent,
                None => break,
            }
        }
        if p.exists() && !p.is_dir() {
            return Err(Error::Usage(format!(
                "{what} {}: {} is a file, not a folder",
                path.display(),
                p.display()
            )));
        }
        return Ok(());
    }
    let store = store_for(url)?;
    let prefix = object_path(url)?;
    let listed = tokio::time::timeout(
        std::time::Duration::from_secs(90),
        store.list_with_delimiter(Some(&prefix)),
    )
    .await;
    match listed {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            // One line: cloud errors carry the service's XML answer, line breaks and all.
            let text: String = e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            let missing = [
                "NoSuchBucket",
                "ContainerNotFound",
                "BucketNotFound",
                "404 Not Found",
            ]
            .iter()
            .any(|m| text.contains(m));
            let hint = if missing {
                format!(
                    " (the bucket or container `{}` does not exist: create it, or correct the location)",
                    url.host_str().unwrap_or_default()
                )
            } else {
                String::new()
            };
            let text: String = text.chars().take(600).collect();
            Err(Error::Usage(format!(
                "{what} {url}: cannot be read{hint}: {text}"
            )))
        }
        Err(_) => Err(Error::Usage(format!(
            "{what} {url}: no answer within 90 s (check the endpoint and the network)"
        ))),
    }
}

/// Path of `url` inside its store.
pub fn object_path(url: &Url) -> Result<ObjPath> {
    if url.scheme() == "file" {
        let p = url
            .to_file_path()
            .map_err(|_| Error::Usage(format!("not a local path: {url}")))?;
        return ObjPath::from_absolute_path(&p)
            .map_err(|e| Error::Usage(format!("bad local path {}: {e}", p.display())));
    }
    ObjPath::parse(url.path().trim_start_matches('/'))
        .map_err(|e| Error::Usage(format!("bad object path in {url}: {e}")))
}

/// Every object under `prefix`. A local folder is walked here rather than by the store, so that
/// a stray entry (a symlink loop, a dangling link, a folder that cannot be read) is skipped
/// with a warning naming it instead of ending the listing.
async fn list_all(
    root: &Url,
    store: &Arc<DynObjectStore>,
    prefix: &ObjPath,
) -> Result<Vec<object_store::ObjectMeta>> {
    if root.scheme() != "file" {
        return Ok(store.list(Some(prefix)).try_collect().await?);
    }
    let dir = root
        .to_file_path()
        .map_err(|_| Error::Usage(format!("not a local path: {root}")))?;
    tokio::task::spawn_blocking(move || walk_local(&dir))
        .await
        .map_err(|e| Error::Internal(format!("listing a folder: {e}")))?
}

fn walk_local(root: &std::path::Path) -> Result<Vec<object_store::ObjectMeta>> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        // A folder reached twice (through a symlink loop) is walked once.
        match std::fs::canonicalize(&dir) {
            Ok(real) if !seen.insert(real.clone()) => {
                tracing::warn!(folder = %dir.display(), "skipping a folder already listed (a symlink loop?)");
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(folder = %dir.display(), error = %e, "skipping a folder that cannot be read");
                continue;
            }
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if dir == root => {
                return match e.kind() {
                    std::io::ErrorKind::NotFound => Ok(out),
                    _ => Err(Error::Usage(format!("cannot list {}: {e}", dir.display()))),
                }
            }
            Err(e) => {
                tracing::warn!(folder = %dir.display(), error = %e, "skipping a folder that cannot be read");
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            // Follows links; a dangling one has no metadata.
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "skipping an entry that cannot be read (a dangling link?)");
                    continue;
                }
            };
            if meta.is_dir() {
                dirs.push(path);
                continue;
            }
            if !meta.is_file() {
                continue;
            }
            let Ok(location) = ObjPath::from_absolute_path(&path) else {
                tracing::warn!(file = %path.display(), "skipping a file whose name is not a valid path");
                continue;
            };
            out.push(object_store::ObjectMeta {
                location,
                last_modified: meta
                    .modified()
                    .map(chrono::DateTime::<chrono::Utc>::from)
                    .unwrap_or_default(),
                size: meta.len(),
                e_tag: None,
                version: None,
            });
        }
    }
    Ok(out)
}

/// A file found under a source location.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path relative to the source location (used in lineage and messages).
    pub name: String,
    pub location: ObjPath,
    pub last_modified: chrono::DateTime<chrono::Utc>,
    pub size: u64,
}

/// Lists the files under `root` whose relative path (or file name) matches one of `include`
/// (every file when empty), sorted by name.
pub async fn list_files(root: &Url, include: &[String]) -> Result<Vec<SourceFile>> {
    let store = store_for(root)?;
    let prefix = object_path(root)?;
    let mut globs = globset::GlobSetBuilder::new();
    for g in include {
        globs.add(globset::Glob::new(g).map_err(|e| Error::Usage(e.to_string()))?);
    }
    let globs = globs.build().map_err(|e| Error::Usage(e.to_string()))?;
    let mut out = Vec::new();
    for meta in list_all(root, &store, &prefix).await? {
        let full = meta.location.as_ref();
        let rel = full
            .strip_prefix(prefix.as_ref())
            .unwrap_or(full)
            .trim_start_matches('/')
            .to_string();
        let file_name = rel.rsplit('/').next().unwrap_or(&rel);
        if file_name.starts_with('.') {
            continue;
        }
        // An Office lock file beside a list someone has open is not an export.
        if file_name.starts_with("~$") {
            tracing::warn!(file = %rel, "skipping an Office lock file");
            continue;
        }
        if !include.is_empty() && !globs.is_match(&rel) && !globs.is_match(file_name) {
            continue;
        }
        out.push(SourceFile {
            name: rel,
            location: meta.location,
            last_modified: meta.last_modified,
            size: meta.size,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A source file read: its bytes, and when they are a guarded mapping of a local file, the
/// watch to ask once they have been used (docs/ARCHITECTURE.md, "Reading local files").
pub struct SourceBytes {
    pub bytes: bytes::Bytes,
    pub watch: Option<Watch>,
}

impl SourceBytes {
    /// Whether the file is still the one listed: always for a copy (checked when it was read),
    /// for a mapping when its watch says so.
    pub fn unchanged(&self) -> bool {
        self.watch.as_ref().is_none_or(Watch::unchanged)
    }
}

/// Files read mapped (`source/file`) and their watches.
pub type Watches = Vec<(String, Watch)>;

/// Gives the resident pages of every watched mapping back ([`Watch::give_back`]).
pub fn give_back(watches: &Watches) {
    for (_, w) in watches {
        w.give_back();
    }
}

/// `text` read again from the file of the watched mapping it lies in ([`Watch::read_again`]),
/// else `text` itself.
pub fn read_again<'t>(watches: &Watches, text: &'t str) -> std::borrow::Cow<'t, str> {
    match watches.iter().find_map(|(_, w)| w.read_again(text)) {
        Some(copy) => std::borrow::Cow::Owned(copy),
        None => std::borrow::Cow::Borrowed(text),
    }
}

/// `Ok` when every watched file is unchanged, else [`Error::SourceChanged`] for the first that
/// changed, saying `after` (what was kept).
pub fn unchanged(watches: &Watches, after: &str) -> Result<()> {
    match watches.iter().find(|(_, w)| !w.unchanged()) {
        None => Ok(()),
        Some((file, _)) => Err(Error::SourceChanged {
            file: file.clone(),
            after: after.to_string(),
        }),
    }
}

/// Local exports this long or longer are mapped, not copied: a mapping costs two system calls
/// and a fault of its own, more than copying a few pages.
const MAP_SOURCES_FROM: u64 = 1 << 20;

/// Reads a listed file, or `None` when it changed between the listing and the end of the read
/// (size or modification time): a file still being written is read by a later run, whole. A
/// large local file is mapped under a guard instead of copied; its reader asks
/// [`SourceBytes::unchanged`] again once it has used the bytes.
pub async fn read_unchanged(root: &Url, file: &SourceFile) -> Result<Option<SourceBytes>> {
    if root.scheme() == "file" && file.size >= MAP_SOURCES_FROM {
        let local = object_store::local::LocalFileSystem::new();
        if let Ok(path) = local.path_to_filesystem(&file.location) {
            let listed = (file.size, file.last_modified);
            let mapped = tokio::task::spawn_blocking(move || guarded::map(&path, listed))
                .await
                .map_err(|e| Error::Other(format!("mapping a source file: {e}")))?;
            // Not mapped (or not mappable): copied below, which also reports what went wrong.
            if let Ok(Some((bytes, watch))) = mapped {
                return Ok(Some(SourceBytes {
                    bytes,
                    watch: Some(watch),
                }));
            }
        }
    }
    let store = source_store_for(root)?;
    let got = store.get(&file.location).await?;
    let opened = (got.meta.size, got.meta.last_modified);
    let bytes = got.bytes().await?;
    let after = store.head(&file.location).await?;
    let listed = (file.size, file.last_modified);
    let stable = opened == listed
        && (after.size, after.last_modified) == listed
        && bytes.len() as u64 == file.size;
    Ok(stable.then_some(SourceBytes { bytes, watch: None }))
}

/// The bytes at `url`, or `None` when there is nothing there.
pub async fn get(url: &Url) -> Result<Option<bytes::Bytes>> {
    let store = store_for(url)?;
    match store.get(&object_path(url)?).await {
        Ok(got) => Ok(Some(got.bytes().await?)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes what is at `url`; nothing there is no error.
pub async fn delete(url: &Url) -> Result<()> {
    let store = store_for(url)?;
    match store.delete(&object_path(url)?).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Writes `bytes` to `url` (the state file, tests and `export`).
pub async fn put(url: &Url, bytes: Vec<u8>) -> Result<()> {
    put_parts(url, vec![bytes]).await
}

/// Writes an object made of these parts, in order, without copying them into one buffer.
pub async fn put_parts(url: &Url, parts: Vec<Vec<u8>>) -> Result<()> {
    let store = store_for(url)?;
    let payload: object_store::PutPayload = parts.into_iter().map(bytes::Bytes::from).collect();
    store.put(&object_path(url)?, payload).await?;
    Ok(())
}

/// Writes an object from the parts received, in order, as they come (a multipart upload of 8 MB
/// parts: the object is never in memory whole). It is made only when `whole` resolves to `true`
/// (every part was sent); otherwise, and on an error, the upload is aborted: nothing is written.
pub async fn put_received(
    url: &Url,
    parts: &mut tokio::sync::mpsc::Receiver<Vec<u8>>,
    whole: impl std::future::Future<Output = bool>,
) -> Result<()> {
    let store = store_for(url)?;
    let upload = store.put_multipart(&object_path(url)?).await?;
    let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, 8 << 20);
    while let Some(part) = parts.recv().await {
        if let Err(e) = w.wait_for_capacity(2).await {
            let _ = w.abort().await;
            return Err(e.into());
        }
        w.put(bytes::Bytes::from(part));
    }
    if !whole.await {
        w.abort().await?;
        return Err(Error::Internal(format!(
            "{url} was not written: its parts did not all come"
        )));
    }
    w.finish().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_tables_are_read_mapped_and_sources_copied() {
        let url = Url::parse("file:///var/data/lake").unwrap();
        assert!(store_for(&url)
            .unwrap()
            .to_string()
            .starts_with("MappedLocal("));
        let source = source_store_for(&url).unwrap().to_string();
        assert!(source.starts_with("LocalFileSystem("), "{source}");
        let memory = Url::parse("memory:///w").unwrap();
        assert!(Arc::ptr_eq(
            &store_for(&memory).unwrap(),
            &source_store_for(&memory).unwrap()
        ));
    }

    #[tokio::test]
    async fn an_object_put_from_parts_is_made_only_when_every_part_came() {
        let dir = tempfile::tempdir().unwrap();
        let url = Url::from_file_path(dir.path().join("state/current.state")).unwrap();
        let parts: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 3 << 20]).collect();
        let send = |parts: Vec<Vec<u8>>| {
            let (tx, rx) = tokio::sync::mpsc::channel(2);
            tokio::spawn(async move {
                for p in parts {
                    tx.send(p).await.unwrap();
                }
            });
            rx
        };
        // The sender stops part way: nothing is made.
        let mut rx = send(parts[..2].to_vec());
        let e = put_received(&url, &mut rx, async { false })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("did not all come"), "{e}");
        assert!(!dir.path().join("state/current.state").exists());
        // Every part came: the object is the parts in order.
        let mut rx = send(parts.clone());
        put_received(&url, &mut rx, async { true }).await.unwrap();
        let written = std::fs::read(dir.path().join("state/current.state")).unwrap();
        assert_eq!(written, parts.concat());
        // A later writer that fails leaves the object that was there.
        let mut rx = send(vec![vec![9; 10 << 20]]);
        assert!(put_received(&url, &mut rx, async { false }).await.is_err());
        let kept = std::fs::read(dir.path().join("state/current.state")).unwrap();
        assert_eq!(kept, parts.concat());
    }

    #[tokio::test]
    async fn a_file_that_changes_after_it_was_listed_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("elevliste_46520_20261101.csv");
        std::fs::write(&file, "kommunenummer;skolenummer\n4621;46520\n").unwrap();
        let root = Url::from_directory_path(dir.path()).unwrap();
        let listed = list_files(&root, &[]).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(read_unchanged(&root, &listed[0]).await.unwrap().is_some());
        // Still being written: more rows arrive after the listing.
        let whole = "kommunenummer;skolenummer\n4621;46520\n4621;46520\n";
        std::fs::write(&file, whole).unwrap();
        assert!(read_unchanged(&root, &listed[0]).await.unwrap().is_none());
        // The next run lists it again and reads it whole.
        let listed = list_files(&root, &[]).await.unwrap();
        let read = read_unchanged(&root, &listed[0]).await.unwrap().unwrap();
        assert_eq!(read.bytes, whole.as_bytes());
        assert!(read.watch.is_none(), "a short file is copied");
        // A long one is mapped under a guard, and the same holds for it.
        let long = dir.path().join("users.json");
        std::fs::write(&long, vec![b' '; 3 << 20]).unwrap();
        let listed = list_files(&root, &["users.json".into()]).await.unwrap();
        let read = read_unchanged(&root, &listed[0]).await.unwrap().unwrap();
        assert!(read.watch.is_some(), "a long local file is mapped");
        assert_eq!(read.bytes.len(), 3 << 20);
        assert!(read.unchanged());
        std::fs::write(&long, vec![b' '; 4 << 20]).unwrap();
        assert!(!read.unchanged(), "grown in place while mapped");
        assert!(read_unchanged(&root, &listed[0]).await.unwrap().is_none());
    }

    #[test]
    fn locations() {
        let u = resolve_location("../lake", Path::new("/a/pipelines")).unwrap();
        assert_eq!(u.as_str(), "file:///a/lake/");
        assert_eq!(
            resolve_location("s3://b/x", Path::new("."))
                .unwrap()
                .as_str(),
            "s3://b/x"
        );
        assert!(resolve_location("ftp://b/x", Path::new(".")).is_err());
    }

    #[tokio::test]
    async fn memory_store_is_shared_and_listing_filters() {
        let root = Url::parse("memory:///src/").unwrap();
        for n in ["a.json", "b.csv", "sub/c.json", ".hidden.json"] {
            put(&root.join(n).unwrap(), b"{}".to_vec()).await.unwrap();
        }
        let files = list_files(&root, &["*.json".into()]).await.unwrap();
        let names: Vec<_> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a.json", "sub/c.json"]);
    }
}
