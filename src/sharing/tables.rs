//! The shared tables as the protocol sees them: versions with their commit times, the data files
//! of a version, and the actions of a commit (for the Change Data Feed). A version never changes
//! once committed, so what is read of one is kept (a bounded number of versions per table).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{DynObjectStore, ObjectStoreExt};
use url::Url;

use crate::error::{Error, Result};

/// A data file (or a change file) of a table.
#[derive(Debug, Clone)]
pub struct DataFile {
    /// Relative to the table root, percent-decoded.
    pub path: String,
    pub size: i64,
    pub partition_values: BTreeMap<String, Option<String>>,
    pub stats: Option<String>,
    pub rows: i64,
}

impl DataFile {
    /// Whether every restriction (column = value) holds for the file's partition values. A null
    /// partition value matches no restriction.
    pub fn allowed(&self, rows: &[(String, String)]) -> bool {
        rows.iter().all(|(column, value)| {
            self.partition_values
                .get(column)
                .is_some_and(|v| v.as_deref() == Some(value.as_str()))
        })
    }
}

fn rows_in(stats: Option<&str>) -> i64 {
    stats
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        .and_then(|s| s["numRecords"].as_i64())
        .unwrap_or(0)
}

/// What a commit did to the data: files added, removed, and change data files.
#[derive(Debug, Clone)]
pub struct Commit {
    pub version: i64,
    /// Commit time, Unix milliseconds.
    pub timestamp: i64,
    pub adds: Vec<DataFile>,
    pub removes: Vec<DataFile>,
    pub cdc: Vec<DataFile>,
}

/// A version of a table: its metadata and data files.
#[derive(Debug)]
pub struct Snapshot {
    /// The Delta `metaData` action.
    pub metadata: serde_json::Value,
    pub min_reader_version: i64,
    pub change_data_feed: bool,
    pub files: Vec<DataFile>,
}

/// Versions of snapshots kept per table.
const SNAPSHOTS_KEPT: usize = 16;

/// One shared table.
pub struct TableView {
    pub url: Url,
    store: Arc<DynObjectStore>,
    log: ObjPath,
    commits: Mutex<BTreeMap<i64, Arc<Commit>>>,
    snapshots: Mutex<BTreeMap<i64, Arc<Snapshot>>>,
}

/// The open tables, by URL.
#[derive(Default)]
pub struct Tables {
    open: Mutex<HashMap<String, Arc<TableView>>>,
}

impl Tables {
    pub fn get(&self, url: &Url) -> Result<Arc<TableView>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = open.get(url.as_str()) {
            return Ok(t.clone());
        }
        let mut log = url.clone();
        log.set_path(&format!("{}/_delta_log/", url.path().trim_end_matches('/')));
        let view = Arc::new(TableView {
            url: url.clone(),
            store: crate::storage::store_for(url)?,
            log: crate::storage::object_path(&log)?,
            commits: Mutex::default(),
            snapshots: Mutex::default(),
        });
        open.insert(url.to_string(), view.clone());
        Ok(view)
    }
}

fn commit_version(name: &str) -> Option<i64> {
    let v = name.strip_suffix(".json")?;
    (v.len() == 20 && v.bytes().all(|b| b.is_ascii_digit()))
        .then(|| v.parse().ok())
        .flatten()
}

fn data_file(a: &serde_json::Value) -> DataFile {
    let raw = a["path"].as_str().unwrap_or_default();
    let stats = a["stats"].as_str().map(str::to_string);
    DataFile {
        path: percent_encoding::percent_decode_str(raw)
            .decode_utf8_lossy()
            .into_owned(),
        size: a["size"].as_i64().unwrap_or(0),
        partition_values: a["partitionValues"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string)))
                    .collect()
            })
            .unwrap_or_default(),
        rows: a["tags"]["numRecords"]
            .as_str()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| rows_in(stats.as_deref())),
        stats,
    }
}

impl TableView {
    /// The newest committed version, or None when the table has no commit yet.
    pub async fn latest(&self) -> Result<Option<i64>> {
        let names: Vec<_> = self.store.list(Some(&self.log)).try_collect().await?;
        Ok(names
            .iter()
            .filter_map(|m| m.location.filename().and_then(commit_version))
            .max())
    }

    /// A commit's actions and time; None when its log file is gone (cleaned up by maintenance).
    pub async fn commit(&self, version: i64) -> Result<Option<Arc<Commit>>> {
        if let Some(c) = self.lock_commits().get(&version) {
            return Ok(Some(c.clone()));
        }
        let path = self.log.clone().join(format!("{version:020}.json"));
        let got = match self.store.get(&path).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let modified = got.meta.last_modified.timestamp_millis();
        let bytes = got.bytes().await?;
        let mut commit = Commit {
            version,
            timestamp: modified,
            adds: Vec::new(),
            removes: Vec::new(),
            cdc: Vec::new(),
        };
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let action: serde_json::Value = serde_json::from_slice(line).map_err(|e| {
                Error::Other(format!("{}: commit {version} is not JSON: {e}", self.url))
            })?;
            if let Some(a) = action.get("add") {
                if a["dataChange"].as_bool().unwrap_or(true) {
                    commit.adds.push(data_file(a));
                }
            } else if let Some(a) = action.get("remove") {
                if a["dataChange"].as_bool().unwrap_or(true) {
                    commit.removes.push(data_file(a));
                }
            } else if let Some(a) = action.get("cdc") {
                commit.cdc.push(data_file(a));
            } else if let Some(i) = action.get("commitInfo") {
                if let Some(t) = i["inCommitTimestamp"].as_i64().or(i["timestamp"].as_i64()) {
                    commit.timestamp = t;
                }
            }
        }
        let commit = Arc::new(commit);
        self.lock_commits().insert(version, commit.clone());
        Ok(Some(commit))
    }

    fn lock_commits(&self) -> std::sync::MutexGuard<'_, BTreeMap<i64, Arc<Commit>>> {
        self.commits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest version committed at or before `t` (ms), at most `up_to`.
    pub async fn version_at(&self, t: i64, up_to: i64) -> Result<Option<i64>> {
        let mut v = up_to;
        while v >= 0 {
            match self.commit(v).await? {
                Some(c) if c.timestamp <= t => return Ok(Some(v)),
                Some(_) => v -= 1,
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    /// The first version committed at or after `t` (ms), at most `up_to`.
    pub async fn version_from(&self, t: i64, up_to: i64) -> Result<Option<i64>> {
        let before = self.version_at(t - 1, up_to).await?;
        let first = before.map_or(0, |v| v + 1);
        Ok((first <= up_to).then_some(first))
    }

    /// The table as of `version`.
    pub async fn snapshot(&self, version: i64) -> Result<Arc<Snapshot>> {
        if let Some(s) = self.lock_snapshots().get(&version) {
            return Ok(s.clone());
        }
        let table = crate::delta::open_at(&self.url, Some(version), None).await?;
        let state = table.snapshot()?;
        let metadata = serde_json::to_value(state.metadata())
            .map_err(|e| Error::Internal(format!("metadata: {e}")))?;
        let protocol = serde_json::to_value(state.protocol())
            .map_err(|e| Error::Internal(format!("protocol: {e}")))?;
        use deltalake::table::config::TablePropertiesExt;
        let change_data_feed = state
            .snapshot()
            .table_properties()
            .enable_change_data_feed();
        let files = crate::delta::file_views(&table)
            .await?
            .iter()
            .map(|f| {
                let stats = f.stats();
                DataFile {
                    path: f.path().into_owned(),
                    size: f.size(),
                    partition_values: f.partition_values_map().into_iter().collect(),
                    rows: rows_in(stats.as_deref()),
                    stats,
                }
            })
            .collect();
        let snap = Arc::new(Snapshot {
            metadata,
            min_reader_version: protocol["minReaderVersion"].as_i64().unwrap_or(1),
            change_data_feed,
            files,
        });
        let mut kept = self.lock_snapshots();
        kept.insert(version, snap.clone());
        while kept.len() > SNAPSHOTS_KEPT {
            let oldest = *kept.keys().next().unwrap_or(&version);
            kept.remove(&oldest);
        }
        Ok(snap)
    }

    fn lock_snapshots(&self) -> std::sync::MutexGuard<'_, BTreeMap<i64, Arc<Snapshot>>> {
        self.snapshots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The object store and the location of a file of the table, for the download route. The
    /// path is relative (no `..`, not absolute): a file URL can only reach the table's files.
    pub fn file_location(&self, path: &str) -> Option<(Arc<DynObjectStore>, ObjPath)> {
        if path.is_empty()
            || path.starts_with('/')
            || path.contains('\\')
            || path
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
            || path.contains("://")
        {
            return None;
        }
        let root = crate::storage::object_path(&self.url).ok()?;
        let mut location = root;
        for part in path.split('/') {
            location = location.join(part);
        }
        Some((self.store.clone(), location))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_commit_files_have_versions() {
        assert_eq!(commit_version("00000000000000000012.json"), Some(12));
        assert_eq!(
            commit_version("00000000000000000010.checkpoint.parquet"),
            None
        );
        assert_eq!(commit_version("_last_checkpoint"), None);
    }

    #[test]
    fn a_file_matches_a_restriction_only_with_that_partition_value() {
        let f = |v: Option<&str>| DataFile {
            path: "x".into(),
            size: 1,
            partition_values: [("fylkesnummer".to_string(), v.map(str::to_string))].into(),
            stats: None,
            rows: 0,
        };
        let rows = vec![("fylkesnummer".to_string(), "46".to_string())];
        assert!(f(Some("46")).allowed(&rows));
        assert!(!f(Some("03")).allowed(&rows));
        assert!(!f(None).allowed(&rows), "a null partition is nobody's");
        assert!(f(None).allowed(&[]));
    }
}
