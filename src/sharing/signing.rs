//! Signed file URLs: `…/files/<payload>.<hmac>?sp=r`. The payload binds the recipient, the share,
//! the table, the file and the expiry; the HMAC-SHA256 key is named in the payload, so several
//! keys are accepted at once and a key rotates without downtime (a new key goes first in the
//! keys file and signs; the old one stays until its URLs have expired). The `sp=r` marker makes
//! delta-kernel treat the URL as pre-signed (docs/ARCHITECTURE.md, "Sharing").

use std::path::Path;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::{Error, Result};

type HmacSha256 = Hmac<Sha256>;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// What a file URL grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Key id.
    pub k: String,
    /// Recipient.
    pub r: String,
    /// Share, schema, table.
    pub s: String,
    pub c: String,
    pub t: String,
    /// The file, relative to the table root, percent-decoded.
    pub p: String,
    /// Rows in the file (for the disclosure log).
    pub n: i64,
    /// Table version the URL was minted for.
    pub v: i64,
    /// Expiry, Unix milliseconds.
    pub e: i64,
}

/// The signing keys: the first signs, all verify.
#[derive(Clone)]
pub struct Keys {
    keys: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        write!(f, "Keys({ids:?})")
    }
}

impl Keys {
    /// Reads the keys file (`<id> <base64url key>` per line, `#` comments); creates it with one
    /// new key, readable only by its owner, when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Keys> {
        if !path.exists() {
            let key = super::tokens::random_bytes::<32>()?;
            let id = hex::encode(super::tokens::random_bytes::<4>()?);
            let text = format!(
                "# Keys that sign elevflyt's file URLs: `<id> <key>`. The first signs; every key is\n\
                 # accepted. To rotate: put a new key first, keep the old one until its URLs expire.\n{id} {}\n",
                B64.encode(key)
            );
            super::tokens::write_private(path, text.as_bytes())?;
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Usage(format!(
                "cannot read the signing keys {}: {e}",
                path.display()
            ))
        })?;
        Self::parse(&text).map_err(|m| Error::Config {
            path: path.to_path_buf(),
            message: m,
        })
    }

    pub fn parse(text: &str) -> std::result::Result<Keys, String> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (id, key) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| format!("line {}: expected `<id> <key>`", i + 1))?;
            let key = B64
                .decode(key.trim())
                .map_err(|_| format!("line {}: the key is not base64url", i + 1))?;
            if key.len() < 32 {
                return Err(format!("line {}: a key has at least 32 bytes", i + 1));
            }
            keys.push((id.to_string(), key));
        }
        if keys.is_empty() {
            return Err("no key".into());
        }
        Ok(Keys { keys })
    }

    fn mac(key: &[u8]) -> HmacSha256 {
        // HMAC takes a key of any length.
        <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts any key length")
    }

    /// The URL token for `grant` (its key id is set to the signing key's).
    pub fn sign(&self, grant: &Grant) -> String {
        let (id, key) = &self.keys[0];
        let mut g = grant.clone();
        g.k = id.clone();
        let payload = B64.encode(serde_json::to_vec(&g).unwrap_or_default());
        let mut mac = Self::mac(key);
        mac.update(payload.as_bytes());
        format!("{payload}.{}", B64.encode(mac.finalize().into_bytes()))
    }

    /// The grant of a token whose signature is good (checked in constant time), expired or not.
    pub fn verify(&self, token: &str) -> Option<Grant> {
        let (payload, sig) = token.split_once('.')?;
        let sig = B64.decode(sig).ok()?;
        let grant: Grant = serde_json::from_slice(&B64.decode(payload).ok()?).ok()?;
        let (_, key) = self.keys.iter().find(|(id, _)| *id == grant.k)?;
        let mut mac = Self::mac(key);
        mac.update(payload.as_bytes());
        mac.verify_slice(&sig).ok()?;
        Some(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant {
            k: String::new(),
            r: "vestland".into(),
            s: "inntak".into(),
            c: "bergen_kommune".into(),
            t: "elevliste_vgs".into(),
            p: "fylkesnummer=46/part-0.parquet".into(),
            n: 10,
            v: 3,
            e: 1_900_000_000_000,
        }
    }

    #[test]
    fn a_token_verifies_under_every_key_of_the_file_and_not_when_changed() {
        let old = Keys::parse(&format!("a {}", B64.encode([1u8; 32]))).unwrap();
        let rotated = Keys::parse(&format!(
            "b {}\na {}",
            B64.encode([2u8; 32]),
            B64.encode([1u8; 32])
        ))
        .unwrap();
        let token = old.sign(&grant());
        assert_eq!(
            rotated.verify(&token).unwrap().p,
            grant().p,
            "old URLs stay good after rotation"
        );
        assert_eq!(rotated.verify(&rotated.sign(&grant())).unwrap().k, "b");
        assert!(
            old.verify(&rotated.sign(&grant())).is_none(),
            "a key it does not have"
        );
        // Another file in the payload, same signature.
        let (_, sig) = token.split_once('.').unwrap();
        let mut other = grant();
        other.p = "fylkesnummer=03/part-0.parquet".into();
        other.k = "a".into();
        let forged = format!("{}.{sig}", B64.encode(serde_json::to_vec(&other).unwrap()));
        assert!(old.verify(&forged).is_none());
        assert!(old.verify("garbage").is_none());
        assert!(Keys::parse("a c2hvcnQ").is_err(), "a short key");
    }
}
