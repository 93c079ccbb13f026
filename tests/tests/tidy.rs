//! Tidy checks over the source tree: file docs, crate READMEs and the workspace invariants.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if p.is_dir() {
            if name == "target" || name.starts_with('.') {
                continue;
            }
            rust_files(&p, out);
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

fn all_rust_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(&root().join("crates"), &mut files);
    rust_files(&root().join("tests"), &mut files);
    files
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let mut missing = Vec::new();
    for f in all_rust_files() {
        let text = std::fs::read_to_string(&f).unwrap();
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        if !first.starts_with("//!") {
            missing.push(rel(&f));
        }
    }
    assert!(
        missing.is_empty(),
        "files without a leading //! doc line: {missing:#?}"
    );
}

#[test]
fn every_crate_has_a_readme_and_the_top_level_is_complete() {
    let r = root();
    for e in std::fs::read_dir(r.join("crates")).unwrap().flatten() {
        if e.path().join("Cargo.toml").exists() {
            assert!(
                e.path().join("README.md").exists(),
                "{} has no README.md",
                rel(&e.path())
            );
        }
    }
    for top in [
        "Cargo.toml",
        "crates",
        "proto",
        "compose",
        "deploy",
        "migrations",
        "tests",
        "Makefile",
        "README.md",
        "ARCHITECTURE.md",
        "rust-toolchain.toml",
        "docs/config.md",
    ] {
        assert!(r.join(top).exists(), "{top} is missing at the top level");
    }
    let readme = std::fs::read_to_string(r.join("README.md")).unwrap();
    assert!(readme.contains("make run") && readme.contains("make test"));
}

/// Invariant: only `crates/store` (and migrations) contain SQL.
#[test]
fn sql_lives_only_in_the_store() {
    let needles = [
        "SELECT ",
        "INSERT INTO",
        "DELETE FROM",
        "UPDATE accounts",
        "CREATE TABLE",
    ];
    let mut offenders = Vec::new();
    for f in all_rust_files() {
        let r = rel(&f);
        if r.starts_with("crates/store/")
            || r.starts_with("tests/tests/tidy.rs")
            || r.starts_with("crates/testkit/")
        {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        if needles.iter().any(|n| text.contains(n)) {
            offenders.push(r);
        }
    }
    assert!(
        offenders.is_empty(),
        "SQL outside crates/store: {offenders:#?}"
    );
}

/// Invariant: only `crates/config` reads the environment (tests and the test kit may).
#[test]
fn only_config_reads_the_environment() {
    let needles = [
        "std::env::var(",
        "std::env::vars(",
        "env::var_os(",
        "std::env::vars_os(",
    ];
    let mut offenders = Vec::new();
    for f in all_rust_files() {
        let r = rel(&f);
        let exempt = r.starts_with("crates/config/")
            || r.starts_with("crates/testkit/")
            || r.starts_with("tests/")
            || r.contains("/tests/")
            || r.contains("/fuzz/")
            || r.ends_with("build.rs");
        if exempt {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        // Code after a `#[cfg(test)]` module is test code.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        if needles.iter().any(|n| code.contains(n)) {
            offenders.push(r);
        }
    }
    assert!(
        offenders.is_empty(),
        "environment read outside crates/config: {offenders:#?}"
    );
}

/// Invariant: the five service crates never depend on each other.
#[test]
fn service_crates_do_not_depend_on_each_other() {
    let services = ["server", "cert-manager", "web-proxy", "portal", "turn"];
    for s in services {
        let manifest = root().join("crates").join(s).join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        for other in services.iter().filter(|o| **o != s) {
            assert!(
                !text.contains(&format!("snikket-{other}")),
                "crates/{s} depends on snikket-{other}"
            );
        }
    }
}
