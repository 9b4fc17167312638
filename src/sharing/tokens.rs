//! Recipients' bearer tokens: minted by `elevflyt share token` (the token is printed once and
//! written to the recipient's profile file; the sharing file keeps only its SHA-256), revoked by
//! `elevflyt share revoke`, and checked in constant time by the server.

use std::path::Path;

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};

use super::config::{Recipient, Sharing};
use crate::error::{Error, Result};

/// `n` random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b)
        .map_err(|e| Error::Other(format!("no random numbers from the system: {e}")))?;
    Ok(b)
}

pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Equal in time independent of where the bytes differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a bearer token was refused (said to the client as 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Unknown,
    Expired,
    Revoked,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Missing => "no bearer token: send `Authorization: Bearer <token>` (the profile file's bearerToken)",
            Refusal::Unknown => "the bearer token is not valid",
            Refusal::Expired => "the bearer token has expired: ask the municipality for a new profile file",
            Refusal::Revoked => "the bearer token has been revoked: ask the municipality for a new profile file",
        }
    }
}

/// The recipient a token belongs to. Every stored hash is compared (in constant time), so the
/// time taken says nothing about which one matched.
pub fn recipient_of<'a>(
    sharing: &'a Sharing,
    token: Option<&str>,
    now: DateTime<Utc>,
) -> std::result::Result<&'a Recipient, Refusal> {
    let token = token.filter(|t| !t.is_empty()).ok_or(Refusal::Missing)?;
    let h = hash(token);
    let mut found = None;
    for r in &sharing.recipients {
        for t in &r.tokens {
            if constant_time_eq(&t.sha256, &h) {
                found = Some((r, t));
            }
        }
    }
    let (r, t) = found.ok_or(Refusal::Unknown)?;
    if t.revoked.is_some_and(|at| at <= now) {
        return Err(Refusal::Revoked);
    }
    if t.expires <= now {
        return Err(Refusal::Expired);
    }
    Ok(r)
}

/// A new token for `recipient`, valid `days`: its hash goes into the sharing file (comments and
/// layout kept), the profile file (`shareCredentialsVersion` 1) to `out`. Returns the token.
pub fn mint(sharing: &Sharing, recipient: &str, days: u32, out: &Path) -> Result<String> {
    if sharing.recipient(recipient).is_none() {
        return Err(Error::Usage(format!(
            "no recipient `{recipient}` in {} (recipients: {})",
            sharing.path.display(),
            sharing
                .recipients
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if days == 0 || days > 366 {
        return Err(Error::Usage("--days: between 1 and 366".into()));
    }
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>()?);
    let id = hex::encode(random_bytes::<4>()?);
    let now = Utc::now();
    let expires = now + chrono::Duration::days(days as i64);
    let endpoint = format!(
        "{}{}/",
        sharing.public_url.clone().unwrap_or_else(|| format!(
            "{}://{}",
            if sharing.tls.is_some() {
                "https"
            } else {
                "http"
            },
            sharing.listen
        )),
        sharing.prefix
    );
    let profile = serde_json::json!({
        "shareCredentialsVersion": 1,
        "endpoint": endpoint,
        "bearerToken": token,
        "expirationTime": expires.to_rfc3339_opts(SecondsFormat::Secs, true),
    });
    write_private(
        out,
        serde_json::to_string_pretty(&profile)
            .map_err(|e| Error::Other(e.to_string()))?
            .as_bytes(),
    )?;
    edit(sharing, recipient, |r| {
        let mut t = toml_edit::Table::new();
        t.insert("id", toml_edit::value(id.clone()));
        t.insert("sha256", toml_edit::value(hex::encode(hash(&token))));
        t.insert("created", toml_edit::value(stamp(now)));
        t.insert("expires", toml_edit::value(stamp(expires)));
        let tokens = r
            .entry("token")
            .or_insert_with(|| toml_edit::Item::ArrayOfTables(Default::default()));
        match tokens.as_array_of_tables_mut() {
            Some(a) => {
                a.push(t);
                Ok(())
            }
            None => Err("`token` is not a list of [[recipient.token]] tables".to_string()),
        }
    })?;
    Ok(token)
}

/// Revokes a recipient's token `id`, or all of its tokens. Returns how many were revoked.
pub fn revoke(sharing: &Sharing, recipient: &str, id: Option<&str>) -> Result<usize> {
    let now = stamp(Utc::now());
    let mut n = 0;
    edit(sharing, recipient, |r| {
        if let Some(tokens) = r.get_mut("token").and_then(|t| t.as_array_of_tables_mut()) {
            for t in tokens.iter_mut() {
                let this = t.get("id").and_then(|v| v.as_str()).unwrap_or_default();
                if id.is_none_or(|id| id == this) && !t.contains_key("revoked") {
                    t.insert("revoked", toml_edit::value(now.clone()));
                    n += 1;
                }
            }
        }
        Ok(())
    })?;
    if n == 0 {
        return Err(Error::Usage(match id {
            Some(id) => format!("recipient `{recipient}` has no unrevoked token `{id}`"),
            None => format!("recipient `{recipient}` has no unrevoked token"),
        }));
    }
    Ok(n)
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Changes the `[[recipient]]` named `recipient` in the sharing file (see [`edit_entry`]).
fn edit(
    sharing: &Sharing,
    recipient: &str,
    change: impl FnOnce(&mut toml_edit::Table) -> std::result::Result<(), String>,
) -> Result<()> {
    edit_entry(sharing, "recipient", recipient, false, change)
}

/// Changes the entry of the array of tables `array` (`[[recipient]]`, `[[user]]`) whose `name`
/// is `name` (added when `create`), checks that the result still loads, and replaces the file in
/// one rename (a running server never reads half a file). Comments and layout are kept.
pub fn edit_entry(
    sharing: &Sharing,
    array: &str,
    name: &str,
    create: bool,
    change: impl FnOnce(&mut toml_edit::Table) -> std::result::Result<(), String>,
) -> Result<()> {
    let path = &sharing.path;
    let bad = |message: String| Error::Config {
        path: path.clone(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e| bad(format!("{e}")))?;
    let entries = doc
        .entry(array)
        .or_insert_with(|| toml_edit::Item::ArrayOfTables(Default::default()))
        .as_array_of_tables_mut()
        .ok_or_else(|| bad(format!("`{array}` is not a list of [[{array}]] tables")))?;
    let at = entries
        .iter()
        .position(|r| r.get("name").and_then(|n| n.as_str()) == Some(name));
    let entry = match (at, create) {
        (Some(i), _) => entries.get_mut(i),
        (None, true) => {
            let mut t = toml_edit::Table::new();
            t.insert("name", toml_edit::value(name));
            entries.push(t);
            entries.iter_mut().last()
        }
        (None, false) => None,
    }
    .ok_or_else(|| Error::Usage(format!("no {array} `{name}` in {}", path.display())))?;
    change(entry).map_err(bad)?;
    let new = doc.to_string();
    Sharing::parse(&new, path)?;
    let tmp = path.with_extension("toml.tmp");
    write_private(&tmp, new.as_bytes())?;
    std::fs::rename(&tmp, path).map_err(|e| bad(format!("cannot replace the file: {e}")))?;
    Ok(())
}

/// Writes a file only its owner can read (it holds a token, or token hashes).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o
        .open(path)
        .map_err(|e| Error::Usage(format!("cannot write {}: {e}", path.display())))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::Usage(format!("cannot write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
