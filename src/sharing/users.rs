//! Operators of the web pages: argon2id password hashes in the sharing file (`elevflyt share
//! user`), checked at login.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use super::config::Sharing;
use crate::error::{Error, Result};

/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 12;

/// An argon2id hash (PHC string) of `password`, with a random salt.
pub fn hash(password: &str) -> Result<String> {
    let salt = SaltString::encode_b64(&super::tokens::random_bytes::<16>()?)
        .map_err(|e| Error::Other(format!("salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Other(format!("argon2: {e}")))
}

/// Whether `password` matches the stored hash.
pub fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Adds the operator `name` (or sets its kommuner, schools and password) in the sharing file.
pub fn set(
    sharing: &Sharing,
    name: &str,
    kommuner: &[String],
    skular: &[String],
    password: &str,
) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(Error::Usage(format!(
            "the password is shorter than {MIN_PASSWORD} characters"
        )));
    }
    if kommuner.is_empty() {
        return Err(Error::Usage("--kommune: at least one kommunenummer".into()));
    }
    let hashed = hash(password)?;
    let list = |v: &[String]| {
        let mut a = toml_edit::Array::new();
        for x in v {
            a.push(x.as_str());
        }
        toml_edit::value(a)
    };
    super::tokens::edit_entry(sharing, "user", name, true, |u| {
        u.insert("kommune", list(kommuner));
        match skular.is_empty() {
            true => {
                u.remove("skule");
            }
            false => {
                u.insert("skule", list(skular));
            }
        }
        u.insert("password", toml_edit::value(hashed));
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = super::hash("korrekt hest batteri").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(super::verify("korrekt hest batteri", &h));
        assert!(!super::verify("korrekt hest batterI", &h));
        assert!(!super::verify("x", "not a hash"));
    }
}
