//! Secrets: a wrapper that never prints its contents, and shared secret files created once.

use crate::files::create_exclusive;
use crate::RuntimeError;
use base64::Engine;
use rand::RngCore;
use std::path::Path;

/// A value that must not appear in logs: `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The secret value, for the one place that needs it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl<T> std::fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Secret<String> {
    /// Compares with `other` in constant time (for equal lengths).
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(other).into()
    }
}

/// Reads the secret in `path` (first line), creating it first — base64 of 32 random bytes, one
/// line, with `mode` permissions — if it does not exist. Safe when several processes race.
pub fn load_or_create_secret(path: &Path, mode: u32) -> Result<Secret<String>, RuntimeError> {
    if !path.exists() {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let line = format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        );
        if create_exclusive(path, line.as_bytes(), mode)? {
            tracing::info!(path = %path.display(), "created secret");
        }
    }
    read_secret(path)
}

/// Reads the first line of a secret file.
pub fn read_secret(path: &Path) -> Result<Secret<String>, RuntimeError> {
    let text = std::fs::read_to_string(path).map_err(|e| RuntimeError::io("reading", path, e))?;
    let line = text.lines().next().unwrap_or("").trim().to_string();
    if line.is_empty() {
        return Err(RuntimeError::BadSecret {
            path: path.to_path_buf(),
        });
    }
    Ok(Secret(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("prosody/turn-auth-secret-v2");
        let a = load_or_create_secret(&p, 0o640).unwrap();
        let b = load_or_create_secret(&p, 0o640).unwrap();
        assert_eq!(a.expose(), b.expose());
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.expose())
            .unwrap();
        assert_eq!(raw.len(), 32);
        assert_eq!(format!("{a:?} {a}"), "*** ***");
        assert!(a.ct_eq(b.expose().as_bytes()));
        assert!(!a.ct_eq(b"nope"));
        std::fs::write(&p, "\n").unwrap();
        assert!(read_secret(&p).is_err());
    }
}
