//! First-start preparation of the data directory, shared by the daemon and the command line.
//!
//! Creates, once, the TURN REST secret at Snikket's path and the internal gRPC secret; opens the
//! database and runs migrations; creates the `default` circle. Safe to run concurrently (the CLI
//! may run while the daemon starts): secrets are created exclusively, migrations are transactional.

use crate::error::ServerError;
use snikket_config::Config;
use snikket_runtime::{load_or_create_secret, Secret};
use snikket_store::Store;
use std::path::Path;

/// What the server needs from its data directory.
pub struct DataDir {
    /// The database.
    pub store: Store,
    /// TURN REST API shared secret.
    pub turn_secret: Secret<String>,
    /// Secret for internal gRPC calls.
    pub grpc_secret: Secret<String>,
    /// Key that masks FAST tokens in the database (`c2s::fast::seal`).
    pub fast_key: Secret<String>,
}

fn ensure_dir(path: &Path, mode: u32, config: &Config) -> Result<(), ServerError> {
    if !path.exists() {
        std::fs::create_dir_all(path).map_err(|source| ServerError::Io {
            action: "creating",
            path: path.to_path_buf(),
            source,
        })?;
        set_mode(path, mode)?;
    }
    chown_if_configured(path, config)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<(), ServerError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        ServerError::Io {
            action: "setting permissions of",
            path: path.to_path_buf(),
            source,
        }
    })
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> Result<(), ServerError> {
    Ok(())
}

/// Applies `PUID`/`PGID` (only when both are non-zero and we run as root), like Snikket's entrypoint.
fn chown_if_configured(path: &Path, config: &Config) -> Result<(), ServerError> {
    #[cfg(unix)]
    if let (Some(uid), Some(gid)) = (config.puid, config.pgid) {
        use std::os::unix::fs::MetadataExt;
        let am_root = std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        if uid != 0 && gid != 0 && am_root {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|source| {
                ServerError::Io {
                    action: "changing owner of",
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        }
    }
    Ok(())
}

/// Prepares the data directory and opens the store.
pub async fn prepare(config: &Config) -> Result<DataDir, ServerError> {
    ensure_dir(&config.data_dir, 0o755, config)?;
    ensure_dir(&config.data_dir.join("prosody"), 0o750, config)?;
    ensure_dir(&config.data_dir.join("internal"), 0o750, config)?;
    ensure_dir(&config.server_dir(), 0o750, config)?;
    let turn_secret = load_or_create_secret(&config.turn_secret_path(), 0o640)?;
    chown_if_configured(&config.turn_secret_path(), config)?;
    let grpc_secret = load_or_create_secret(&config.grpc_secret_path(), 0o640)?;
    chown_if_configured(&config.grpc_secret_path(), config)?;
    // Only the server reads it.
    let fast_key_path = config.data_dir.join("internal").join("fast-token-key");
    let fast_key = load_or_create_secret(&fast_key_path, 0o600)?;
    chown_if_configured(&fast_key_path, config)?;
    let legacy = config.data_dir.join("prosody").join("turn-auth-secret");
    if legacy.exists() {
        let _ = std::fs::remove_file(&legacy);
    }
    let store = Store::open(&config.server.database).await?;
    if store.ensure_default_circle(&config.site_name).await? {
        tracing::info!(name = %config.site_name, "created the default circle");
    }
    Ok(DataDir {
        store,
        turn_secret,
        grpc_secret,
        fast_key,
    })
}
