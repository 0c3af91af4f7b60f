//! `auth.json` files: `data/auth.json` (ours) and `~/.factory/auth.json` (Factory CLI's, read
//! only). Both accept `refresh_token`, and `access_token` or `api_key` (`upstream-factory.md` §1.6).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::secret::Secret;
use crate::store::{self, StoreError};

/// What an auth.json holds.
#[derive(Debug, Clone, Default)]
pub struct AuthFile {
    pub refresh_token: Option<Secret>,
    /// `access_token`, else `api_key`.
    pub access_token: Option<Secret>,
    /// When the access token was minted (ms since epoch in the file).
    pub last_refresh: Option<SystemTime>,
    /// Hash of the seed refresh token the stored rotated token descends from.
    pub seed_sha256: Option<String>,
    /// The fleet generation of the stored pair (contract §12; absent in files written before it).
    pub generation: Option<u64>,
}

#[derive(Deserialize)]
struct Raw {
    refresh_token: Option<String>,
    access_token: Option<String>,
    api_key: Option<String>,
    last_refresh: Option<u64>,
    seed_sha256: Option<String>,
    #[serde(rename = "gen")]
    generation: Option<u64>,
}

#[derive(Serialize)]
struct Written<'a> {
    refresh_token: &'a str,
    access_token: &'a str,
    last_refresh: u64,
    seed_sha256: &'a str,
    #[serde(rename = "gen")]
    generation: u64,
    written_by: &'static str,
}

/// Reading failures (the file exists but cannot be used).
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

fn nonempty(s: Option<String>) -> Option<Secret> {
    s.map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .map(Secret::new)
}

/// Reads an auth file; `Ok(None)` when it does not exist.
pub fn read(path: &Path) -> Result<Option<AuthFile>, AuthFileError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(AuthFileError::Invalid {
                path: path.display().to_string(),
                message: e.to_string(),
            });
        }
    };
    let raw: Raw = serde_json::from_slice(&bytes).map_err(|e| AuthFileError::Invalid {
        path: path.display().to_string(),
        // serde_json's message names line/column and the expected type, never the content.
        message: format!("not a valid auth file: {e}"),
    })?;
    Ok(Some(AuthFile {
        refresh_token: nonempty(raw.refresh_token),
        access_token: nonempty(raw.access_token).or_else(|| nonempty(raw.api_key)),
        last_refresh: raw
            .last_refresh
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
        seed_sha256: raw.seed_sha256,
        generation: raw.generation,
    }))
}

/// Writes a rotated token pair of fleet generation `generation` to `data/auth.json` (0600,
/// atomic).
pub fn write(
    path: &Path,
    refresh_token: &Secret,
    access_token: &Secret,
    minted_at: SystemTime,
    seed_sha256: &str,
    generation: u64,
) -> Result<(), StoreError> {
    let w = Written {
        refresh_token: refresh_token.expose(),
        access_token: access_token.expose(),
        last_refresh: minted_at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        seed_sha256,
        generation,
        written_by: "droid2api",
    };
    let mut bytes = serde_json::to_vec_pretty(&w).unwrap_or_default();
    bytes.push(b'\n');
    store::write_private_atomic(path, &bytes)
}

/// Hex SHA-256 of a token (stored instead of the seed itself).
pub fn sha256_hex(token: &Secret) -> String {
    hex::encode(Sha256::digest(token.expose().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_formats() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("auth.json");
        assert!(read(&p).unwrap().is_none());
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        write(
            &p,
            &Secret::new("rt-new"),
            &Secret::new("at-new"),
            t,
            "abc",
            7,
        )
        .unwrap();
        let f = read(&p).unwrap().unwrap();
        assert_eq!(f.refresh_token.unwrap().expose(), "rt-new");
        assert_eq!(f.access_token.unwrap().expose(), "at-new");
        assert_eq!(f.last_refresh, Some(t));
        assert_eq!(f.seed_sha256.as_deref(), Some("abc"));
        assert_eq!(f.generation, Some(7));

        std::fs::write(&p, r#"{"api_key": "fk-static", "refresh_token": ""}"#).unwrap();
        let f = read(&p).unwrap().unwrap();
        assert!(f.refresh_token.is_none());
        assert_eq!(f.generation, None);
        assert_eq!(f.access_token.unwrap().expose(), "fk-static");

        std::fs::write(&p, "{not json").unwrap();
        assert!(
            read(&p)
                .unwrap_err()
                .to_string()
                .contains("not a valid auth file")
        );
    }
}
