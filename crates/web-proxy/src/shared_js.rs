//! `/share/...`: Debian's bundled JavaScript libraries (`libjs-jquery`, `libjs-bootstrap4`) from
//! `/usr/share/javascript` (spec 6.2). Directory listings are refused with 403, as nginx does.

use std::path::{Path, PathBuf};

/// Where Debian installs the libraries.
pub const ROOT: &str = "/usr/share/javascript";
/// Largest file served (jQuery and Bootstrap are well under this).
const MAX_FILE: u64 = 4 * 1024 * 1024;

/// The outcome of a lookup.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// File contents and content type.
    File(Vec<u8>, &'static str),
    /// A directory: listing forbidden.
    Forbidden,
    /// Nothing there (or a name we refuse to look up).
    NotFound,
}

/// Resolves `rel` (already dot-segment free) under `root`, refusing hidden names and symlinks
/// that leave the tree.
pub async fn lookup(root: &Path, rel: &str) -> Lookup {
    let mut path = PathBuf::from(root);
    for seg in rel.split('/').filter(|s| !s.is_empty()) {
        if seg.starts_with('.')
            || !seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'+'))
        {
            return Lookup::NotFound;
        }
        path.push(seg);
    }
    let Ok(real) = tokio::fs::canonicalize(&path).await else {
        return Lookup::NotFound;
    };
    let Ok(real_root) = tokio::fs::canonicalize(root).await else {
        return Lookup::NotFound;
    };
    // Debian symlinks e.g. jquery into other /usr/share dirs; anything under /usr/share is fine.
    if !real.starts_with(&real_root) && !real.starts_with("/usr/share/") {
        return Lookup::NotFound;
    }
    let Ok(meta) = tokio::fs::metadata(&real).await else {
        return Lookup::NotFound;
    };
    if meta.is_dir() {
        return Lookup::Forbidden;
    }
    if !meta.is_file() || meta.len() > MAX_FILE {
        return Lookup::NotFound;
    }
    match tokio::fs::read(&real).await {
        Ok(bytes) => Lookup::File(bytes, content_type(&real)),
        Err(_) => Lookup::NotFound,
    }
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("js") => "application/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("map") | Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("woff2") => "font/woff2",
        Some("woff") => "font/woff",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_dirs_and_refusals() {
        let root = std::env::temp_dir().join(format!("snikket-proxy-share-{}", std::process::id()));
        std::fs::create_dir_all(root.join("jquery")).unwrap();
        std::fs::write(root.join("jquery/jquery.min.js"), b"jq").unwrap();
        assert_eq!(
            lookup(&root, "jquery/jquery.min.js").await,
            Lookup::File(b"jq".to_vec(), "application/javascript; charset=utf-8")
        );
        assert_eq!(lookup(&root, "jquery/").await, Lookup::Forbidden);
        assert_eq!(lookup(&root, "").await, Lookup::Forbidden);
        assert_eq!(lookup(&root, "jquery/missing.js").await, Lookup::NotFound);
        assert_eq!(lookup(&root, "../etc/passwd").await, Lookup::NotFound);
        assert_eq!(lookup(&root, ".hidden").await, Lookup::NotFound);
        let _ = std::fs::remove_dir_all(&root);
    }
}
