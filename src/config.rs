//! The pipeline file (`pipelines/*.toml`): parsing and validation.
//!
//! Validation here touches nothing outside the file itself, so a file can be checked without
//! opening any storage. Credentials never live in this file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
pub use crate::quality::QualityConfig;
use crate::quality::Severity;

/// A whole pipeline file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    pub pipeline: PipelineSection,
    #[serde(rename = "source", default)]
    pub sources: Vec<SourceConfig>,
    #[serde(default)]
    pub quality: QualityConfig,
}

/// `[pipeline]`: who this is and where the tables go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSection {
    /// Name of the pipeline, recorded in `kjoring`.
    pub name: String,
    /// Four-digit kommunenummer of the municipality that owns the data.
    pub kommunenummer: String,
    /// Warehouse root: a path (relative to the pipeline file) or a URL
    /// (`file://`, `s3://`, `az://`, `abfss://`, `gs://`, `memory://`).
    pub warehouse: String,
    /// Catalog (first path level under the warehouse), e.g. `bergen_kommune`.
    pub catalog: String,
    /// Schema (second path level), e.g. `grunnskole`.
    pub schema: String,
    /// Whether a run compacts the small files of a table it committed to once every ten
    /// commits (docs/ARCHITECTURE.md, "Compaction after a run"). Default: yes.
    #[serde(default = "yes")]
    pub compact_after_run: bool,
}

fn yes() -> bool {
    true
}

/// `[[source]]`: one set of exports.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Name of the source; becomes `kildesystem` and the suffix of `raw_<name>`.
    pub name: String,
    /// The input format, by its registered name (`elevflyt validate` lists them).
    pub format: String,
    /// Folder with the exports: a path (relative to the pipeline file) or a URL.
    pub location: String,
    /// File name globs to read (default: every file).
    #[serde(default)]
    pub include: Vec<String>,
    /// Whether a run may find no files at the location. By default it is an error (a misspelt
    /// location must not make a scheduled job succeed every night with no data).
    #[serde(default)]
    pub optional: bool,
    /// API formats (`fint`, `oneroster-rest`): how to sign in (OAuth2). The secrets come from
    /// the environment (`ELEVFLYT_<SOURCE>_CLIENT_SECRET`, `…_PASSWORD`), never from this file.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// API formats: entries asked for per page (default 1000; at most 10 000).
    #[serde(default)]
    pub page_size: Option<u32>,
    /// API formats: seconds one request may take (default 60).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    /// API formats: retries of one request after a 429, a 5xx, a timeout or a broken
    /// connection (default 5), with backoff and `Retry-After` honoured.
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// API formats: the largest page accepted, in MiB (default 256).
    #[serde(default)]
    pub max_page_mb: Option<f64>,
}

/// `[source.auth]`: OAuth2 for an API source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The token endpoint (FINT: `https://idp.felleskomponent.no/nidp/oauth/nam/token`).
    pub token_url: String,
    /// `client_credentials` (default) or `password` (as FINT clients use).
    #[serde(default = "client_credentials")]
    pub grant: String,
    /// The client id; when absent, from `ELEVFLYT_<SOURCE>_CLIENT_ID`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// The user name of the password grant.
    #[serde(default)]
    pub username: Option<String>,
    /// The scope asked for (FINT: `fint-client`).
    #[serde(default)]
    pub scope: Option<String>,
    /// The variable holding the client secret (default `ELEVFLYT_<SOURCE>_CLIENT_SECRET`).
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// The variable holding the password (default `ELEVFLYT_<SOURCE>_PASSWORD`).
    #[serde(default)]
    pub password_env: Option<String>,
}

fn client_credentials() -> String {
    "client_credentials".into()
}

impl SourceConfig {
    /// The input format this source names, from the registry (checked when the file is loaded).
    pub fn format(&self) -> Result<&'static dyn crate::formats::Format> {
        crate::formats::find(&self.format).map_err(Error::Usage)
    }
}

/// A loaded pipeline: the file plus where it came from, with paths resolved.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub file: PipelineFile,
    pub path: PathBuf,
    /// Warehouse URL after `--warehouse` and relative-path resolution.
    pub warehouse: url::Url,
}

impl Pipeline {
    pub fn load(path: &Path, warehouse_override: Option<&str>) -> Result<Pipeline> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: format!("kan ikkje lese fila: {e}"),
        })?;
        Self::parse(&text, path, warehouse_override)
    }

    pub fn parse(text: &str, path: &Path, warehouse_override: Option<&str>) -> Result<Pipeline> {
        let file: PipelineFile = toml::from_str(text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: match text.contains("[[share]]") || text.contains("[[recipient]]") {
                true => "this is a sharing file (for `elevflyt serve`), not a pipeline file".into(),
                false => e.to_string(),
            },
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let config_err = |message: String| Error::Config {
            path: path.to_path_buf(),
            message,
        };
        file.validate().map_err(config_err)?;
        // A --warehouse given on the command line is relative to the working directory.
        let warehouse = match warehouse_override {
            Some(w) => crate::storage::resolve_location(w, Path::new(".")),
            None => crate::storage::resolve_location(&file.pipeline.warehouse, base),
        }
        .map_err(config_err)?;
        Ok(Pipeline {
            file,
            path: path.to_path_buf(),
            warehouse,
        })
    }

    pub fn name(&self) -> &str {
        &self.file.pipeline.name
    }

    pub fn kommunenummer(&self) -> &str {
        &self.file.pipeline.kommunenummer
    }

    /// Base directory for relative paths in the file.
    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// URL of a table: `<warehouse>/<catalog>/<schema>/<table>`.
    pub fn table_url(&self, table: &str) -> url::Url {
        let mut u = self.warehouse.clone();
        let p = &self.file.pipeline;
        let path = format!(
            "{}/{}/{}/{}",
            u.path().trim_end_matches('/'),
            p.catalog,
            p.schema,
            table
        );
        u.set_path(&path);
        u
    }

    pub fn source_location(&self, source: &SourceConfig) -> Result<url::Url> {
        if let Some(url) = api_location(source).map_err(|message| Error::Config {
            path: self.path.clone(),
            message: format!("source `{}`: {message}", source.name),
        })? {
            return Ok(url);
        }
        crate::storage::resolve_location(&source.location, self.base_dir()).map_err(|message| {
            Error::Config {
                path: self.path.clone(),
                message: format!("source `{}`: {message}", source.name),
            }
        })
    }
}

/// The base URL of a source read from its API (`http(s)://` and a format with an API), checked:
/// the path the format's API lives under, no credentials in the URL. `None` for file locations.
pub fn api_location(source: &SourceConfig) -> std::result::Result<Option<url::Url>, String> {
    let is_http = source.location.starts_with("http://") || source.location.starts_with("https://");
    let api = crate::formats::lookup(&source.format).and_then(|f| f.api());
    let Some(api) = api else {
        if is_http {
            return Err(format!(
                "`{}` is a web address, and format `{}` is read from files (the formats read from an API: fint, oneroster-rest)",
                source.location, source.format
            ));
        }
        if source.auth.is_some() {
            return Err("[source.auth] is for the API formats (fint, oneroster-rest)".into());
        }
        return Ok(None);
    };
    if !is_http {
        // Saved pages in a folder are read as files.
        return Ok(None);
    }
    let url = url::Url::parse(&source.location)
        .map_err(|e| format!("`{}` is not a URL: {e}", source.location))?;
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
        // Said without what it holds: a password typed into the location is not repeated.
        let mut shown = url.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        shown.set_query(None);
        return Err(format!(
            "`{shown}`: no user, password or query in the location; credentials go in [source.auth] and the environment"
        ));
    }
    let path = url.path().trim_end_matches('/');
    if !api.base_paths.iter().any(|p| path.ends_with(p)) {
        return Err(format!(
            "`{}`: the base URL of a `{}` API ends with {}",
            source.location,
            source.format,
            api.base_paths
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }
    if source.max_page_mb.is_some_and(|m| m.is_nan() || m <= 0.0) {
        return Err("max_page_mb must be more than 0".into());
    }
    if let Some(auth) = &source.auth {
        if !matches!(auth.grant.as_str(), "client_credentials" | "password") {
            return Err(format!(
                "[source.auth] grant must be \"client_credentials\" or \"password\", got `{}`",
                auth.grant
            ));
        }
        if auth.grant == "password" && auth.username.is_none() {
            return Err("[source.auth] the password grant needs `username`".into());
        }
        if !(auth.token_url.starts_with("https://") || auth.token_url.starts_with("http://")) {
            return Err(format!(
                "[source.auth] token_url `{}` is not a web address",
                auth.token_url
            ));
        }
    }
    Ok(Some(url))
}

impl PipelineFile {
    fn validate(&self) -> std::result::Result<(), String> {
        let p = &self.pipeline;
        if p.name.trim().is_empty() {
            return Err("[pipeline] name must not be empty".into());
        }
        if p.kommunenummer.len() != 4 || !p.kommunenummer.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "[pipeline] kommunenummer must be four digits, got `{}`",
                p.kommunenummer
            ));
        }
        if !crate::quality::kommuner::is_kommune(&p.kommunenummer) {
            return Err(format!(
                "[pipeline] kommunenummer `{}` is not in the 2024 kommune list",
                p.kommunenummer
            ));
        }
        for (what, v) in [("catalog", &p.catalog), ("schema", &p.schema)] {
            if v.is_empty()
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(format!(
                    "[pipeline] {what} must be letters, digits, `_` or `-`, got `{v}`"
                ));
            }
        }
        if self.sources.is_empty() {
            return Err("at least one [[source]] is required".into());
        }
        let mut seen = std::collections::HashSet::new();
        for s in &self.sources {
            if s.name.is_empty()
                || !s
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                return Err(format!(
                    "[[source]] name must be lower-case letters, digits or `_`, got `{}`",
                    s.name
                ));
            }
            crate::formats::find(&s.format).map_err(|e| format!("source `{}`: {e}", s.name))?;
            api_location(s).map_err(|e| format!("source `{}`: {e}", s.name))?;
            if !seen.insert(&s.name) {
                return Err(format!("[[source]] name `{}` is used twice", s.name));
            }
            for g in &s.include {
                globset::Glob::new(g)
                    .map_err(|e| format!("source `{}`: bad include pattern `{g}`: {e}", s.name))?;
            }
        }
        for (name, value) in &self.quality.overrides {
            if crate::quality::rules::find(name).is_none() {
                return Err(format!(
                    "[quality] unknown key `{name}` (not a rule; see `elevflyt rules`)"
                ));
            }
            let Some(rule) = crate::quality::rules::find(name) else {
                continue;
            };
            let severity_ok =
                |v: &toml::Value| v.as_str().is_some_and(|s| s.parse::<Severity>().is_ok());
            let share_ok = |v: &toml::Value| {
                v.as_float()
                    .or_else(|| v.as_integer().map(|i| i as f64))
                    .is_some_and(|f| (0.0..=1.0).contains(&f))
            };
            let ok = match value {
                toml::Value::String(_) => severity_ok(value),
                toml::Value::Table(t) if rule.threshold.is_some() => {
                    t.keys().all(|k| k == "alvorsgrad" || k == "terskel")
                        && t.get("alvorsgrad").is_none_or(severity_ok)
                        && t.get("terskel").is_none_or(share_ok)
                }
                _ => false,
            };
            if !ok {
                let table_form = if rule.threshold.is_some() {
                    " or { alvorsgrad = \"...\", terskel = 0.0-1.0 }"
                } else {
                    ""
                };
                return Err(format!(
                    "[quality] {name} must be \"warn\", \"drop\" or \"fail\"{table_form}, got {value}"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[pipeline]
name = "t"
kommunenummer = "4601"
warehouse = "../lakehouse"
catalog = "bergen_kommune"
schema = "grunnskole"

[[source]]
name = "vigilo"
format = "oneroster-json"
location = "../data"
include = ["*.json"]

[quality]
allow_synthetic_fnr = true
duplikat = "warn"
"#;

    #[test]
    fn parses_and_resolves_relative_paths() {
        let p = Pipeline::parse(GOOD, Path::new("/x/pipelines/b.toml"), None).unwrap();
        assert_eq!(p.warehouse.as_str(), "file:///x/lakehouse/");
        assert_eq!(
            p.table_url("elev").as_str(),
            "file:///x/lakehouse/bergen_kommune/grunnskole/elev"
        );
        assert_eq!(
            p.file.quality.severity_override("duplikat"),
            Some(Severity::Warn)
        );
        let p =
            Pipeline::parse(GOOD, Path::new("/x/pipelines/b.toml"), Some("memory:///w")).unwrap();
        assert_eq!(
            p.table_url("elev").as_str(),
            "memory:///w/bergen_kommune/grunnskole/elev"
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let bad = GOOD.replace("catalog =", "katalog = \"x\"\ncatalog =");
        let err = Pipeline::parse(&bad, Path::new("p.toml"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("katalog"), "{err}");
        let bad = GOOD.replace("duplikat", "dupplikat");
        let err = Pipeline::parse(&bad, Path::new("p.toml"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("dupplikat"), "{err}");
        let bad = GOOD.replace("\"4601\"", "\"9999\"");
        let err = Pipeline::parse(&bad, Path::new("p.toml"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("9999"), "{err}");
    }
}
