//! ACME HTTP-01 challenge files (RFC 8555 §8.3) from the volume shared with the certificate manager.
//!
//! Only a bare token can name a file: the token alphabet (base64url) has no `/` and no `.`, so a
//! request can never leave the challenge directory.

use std::path::Path;

/// Largest challenge file served; real key authorizations are under 100 bytes.
const MAX_FILE: u64 = 16 * 1024;

/// Whether `token` is a plausible ACME token: 1 to 255 characters of `[A-Za-z0-9_-]`.
pub fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() < 256
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Reads the challenge file for `token`; `None` if the token is invalid or no regular file exists.
pub async fn read(dir: &Path, token: &str) -> Option<Vec<u8>> {
    if !valid_token(token) {
        return None;
    }
    let path = dir.join(token);
    let meta = tokio::fs::metadata(&path).await.ok()?;
    if !meta.is_file() || meta.len() > MAX_FILE {
        return None;
    }
    tokio::fs::read(&path).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert!(valid_token("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"));
        assert!(valid_token("a-b_c"));
        for bad in [
            "",
            "..",
            "a/b",
            "a.b",
            "a%2fb",
            "a b",
            "é",
            &"a".repeat(256),
        ] {
            assert!(!valid_token(bad), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn reads_only_regular_files_in_the_directory() {
        let dir = tempfile_dir();
        std::fs::write(dir.join("tok"), b"tok.thumb").unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        assert_eq!(read(&dir, "tok").await.as_deref(), Some(&b"tok.thumb"[..]));
        assert_eq!(read(&dir, "sub").await, None);
        assert_eq!(read(&dir, "missing").await, None);
        assert_eq!(read(&dir, "../tok").await, None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "snikket-proxy-challenge-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
