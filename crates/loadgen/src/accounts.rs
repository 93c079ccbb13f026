//! Pre-creating bench accounts: our SQLite store (via `snikket-store`) and Prosody's files.

use anyhow::{Context, Result};
use snikket_store::{Credential, Role, Store};
use snikket_xmpp::scram::{ScramHash, StoredCredentials};
use std::fmt::Write as _;
use std::path::Path;

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Creates `names` in the SQLite store at `path` (skipping names that already exist).
pub async fn create_sqlite(
    path: &Path,
    names: &[String],
    password: &str,
    salt: &str,
    iterations: u32,
) -> Result<usize> {
    let store = Store::open_url(&format!("sqlite://{}", path.display()))
        .await
        .context("opening the store")?;
    let mut creds = Vec::new();
    for (hash, mech) in [
        (ScramHash::Sha1, "SCRAM-SHA-1"),
        (ScramHash::Sha256, "SCRAM-SHA-256"),
    ] {
        let c = StoredCredentials::derive(hash, password, salt.as_bytes(), iterations)
            .map_err(|e| anyhow::anyhow!("deriving credentials: {e}"))?;
        creds.push(Credential {
            mechanism: mech.to_string(),
            salt: c.salt,
            iterations: c.iterations,
            stored_key: c.stored_key,
            server_key: c.server_key,
        });
    }
    let mut created = 0;
    for name in names {
        if store
            .create_account(name, Role::Normal, &creds, None)
            .await
            .is_ok()
        {
            created += 1;
        }
    }
    Ok(created)
}

/// Writes Prosody 0.12 `internal_hashed` account files (`<dir>/<user>.dat`, SCRAM-SHA-1 keys).
pub fn create_prosody(
    dir: &Path,
    names: &[String],
    password: &str,
    salt: &str,
    iterations: u32,
) -> Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let c = StoredCredentials::derive(ScramHash::Sha1, password, salt.as_bytes(), iterations)
        .map_err(|e| anyhow::anyhow!("deriving credentials: {e}"))?;
    let body = format!(
        "return {{\n\t[\"salt\"] = \"{salt}\";\n\t[\"server_key\"] = \"{}\";\n\t[\"stored_key\"] = \"{}\";\n\t[\"iteration_count\"] = {iterations};\n}};\n",
        hex(&c.server_key),
        hex(&c.stored_key)
    );
    for name in names {
        std::fs::write(dir.join(format!("{name}.dat")), &body)?;
    }
    Ok(names.len())
}
