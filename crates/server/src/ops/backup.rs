//! `backup FILE` and `restore FILE`: a consistent snapshot of the whole data directory.
//!
//! The database is copied with the store's snapshot (SQLite `VACUUM INTO`: one read transaction,
//! writers keep going), never by copying the live file and its WAL. Everything else under the data
//! directory (secrets, `letsencrypt/` with its symlinks, uploads) is archived as it is. Entries are
//! named `snikket/…` like the archives of Snikket's `scripts/backup.sh`, so that script's users
//! find the layout they know. `FILE` may be `-` for standard output/input, which is how it is used
//! from outside the container: `docker exec snikket backup - > snikket.tar`.
//!
//! PostgreSQL: the database lives outside the data directory and is backed up with `pg_dump`
//! (`pg_dump -Fc URL > snikket.pgdump`, restored with `pg_restore -d URL snikket.pgdump`); these
//! commands then cover the files only and say so.

use crate::ops::health;
use crate::ops::tar::{Header, Kind, Reader, Writer};
use crate::ops::OpsError;
use clap::Args;
use snikket_config::{Config, Database};
use snikket_store::Store;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Top directory of every archive entry.
const TOP: &str = "snikket";

/// Options of `backup`.
#[derive(Args, Debug, Clone)]
pub struct BackupArgs {
    /// Archive to create (an uncompressed tar); `-` writes to standard output.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// Options of `restore`.
#[derive(Args, Debug, Clone)]
pub struct RestoreArgs {
    /// Archive made by `backup` (or an uncompressed tar of /snikket); `-` reads standard input.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Replace the data of an instance that has already been started (the server must be stopped).
    #[arg(long)]
    pub force: bool,
}

/// What a backup contained.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Regular files, the database included.
    pub files: u64,
    /// Bytes of file data.
    pub bytes: u64,
    /// Whether the database is in the archive (false on PostgreSQL).
    pub database: bool,
}

fn is_stdio(p: &Path) -> bool {
    p.as_os_str() == "-"
}

/// The SQLite file, if that is the backend.
fn sqlite_path(config: &Config) -> Option<&Path> {
    match &config.server.database {
        Database::Sqlite(p) => Some(p.as_path()),
        Database::Postgres(_) => None,
    }
}

/// The database file and its companions, which are never copied as files.
fn is_live_database(path: &Path, db: Option<&Path>) -> bool {
    let Some(db) = db else { return false };
    let Some(name) = db.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    path.parent() == db.parent()
        && path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
            n == name
                || n.strip_prefix(name)
                    .is_some_and(|rest| ["-wal", "-shm", "-journal"].contains(&rest))
        })
}

/// Removes the temporary snapshot however the backup ends.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn mtime(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

#[cfg(unix)]
fn mode(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o777
}

#[cfg(not(unix))]
fn mode(_meta: &std::fs::Metadata) -> u32 {
    0o644
}

/// Archive name of a path under the data directory.
fn entry_name(data_dir: &Path, path: &Path) -> Result<String, OpsError> {
    let rel = path.strip_prefix(data_dir).map_err(|_| {
        OpsError::Refused(format!("{} is outside the data directory", path.display()))
    })?;
    let mut name = String::from(TOP);
    for c in rel.components() {
        let Component::Normal(part) = c else { continue };
        let part = part
            .to_str()
            .ok_or_else(|| OpsError::Archive(format!("{} is not UTF-8", path.display())))?;
        name.push('/');
        name.push_str(part);
    }
    Ok(name)
}

/// Writes the archive of `config`'s data directory to `out`. `exclude` is never archived (the
/// output file itself, when it lies inside the data directory).
pub async fn write_backup<W: Write>(
    config: &Config,
    out: W,
    exclude: Option<&Path>,
) -> Result<Summary, OpsError> {
    let data_dir = &config.data_dir;
    if !data_dir.is_dir() {
        return Err(OpsError::Refused(format!(
            "no data directory at {}: nothing to back up",
            data_dir.display()
        )));
    }
    let db = sqlite_path(config);
    let mut snapshot: Option<(TempFile, String)> = None;
    if let Some(db) = db {
        if !db.is_file() {
            return Err(OpsError::Refused(format!(
                "no database at {}: start the server once before backing up",
                db.display()
            )));
        }
        let parent = db.parent().unwrap_or(data_dir);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let tmp = TempFile(parent.join(format!(".backup-{}-{nanos}.sqlite", std::process::id())));
        let store = Store::open(&config.server.database).await?;
        let taken = store.snapshot_into(&tmp.0).await;
        store.close().await;
        taken?;
        let name = if db.starts_with(data_dir) {
            entry_name(data_dir, db)?
        } else {
            format!("{TOP}/server/snikket.sqlite")
        };
        snapshot = Some((tmp, name));
    }

    let mut w = Writer::new(out);
    let mut summary = Summary::default();
    let root_meta =
        std::fs::metadata(data_dir).map_err(|e| OpsError::io("reading", data_dir, e))?;
    w.append(
        &Header {
            path: TOP.into(),
            mode: mode(&root_meta),
            mtime: mtime(&root_meta),
            kind: Kind::Dir,
        },
        None,
    )
    .map_err(|e| OpsError::io("writing the archive for", data_dir, e))?;

    let temp_path = snapshot.as_ref().map(|(t, _)| t.0.clone());
    let mut stack = vec![data_dir.clone()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| OpsError::io("listing", &dir, e))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        entries.sort();
        let mut subdirs = Vec::new();
        for path in entries {
            if is_live_database(&path, db)
                || Some(path.as_path()) == temp_path.as_deref()
                || Some(path.as_path()) == exclude
            {
                continue;
            }
            // Files may vanish while we walk (a finished upload's temp file): skip them.
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let name = entry_name(data_dir, &path)?;
            let ft = meta.file_type();
            let header = |kind| Header {
                path: name.clone(),
                mode: mode(&meta),
                mtime: mtime(&meta),
                kind,
            };
            if ft.is_symlink() {
                let target = std::fs::read_link(&path)
                    .map_err(|e| OpsError::io("reading link", &path, e))?;
                let target = target
                    .to_str()
                    .ok_or_else(|| OpsError::Archive(format!("{} is not UTF-8", path.display())))?
                    .to_string();
                w.append(&header(Kind::Symlink(target)), None)
                    .map_err(|e| OpsError::io("archiving", &path, e))?;
            } else if ft.is_dir() {
                w.append(&header(Kind::Dir), None)
                    .map_err(|e| OpsError::io("archiving", &path, e))?;
                subdirs.push(path);
            } else if ft.is_file() {
                let Ok(mut f) = File::open(&path) else {
                    continue;
                };
                w.append(&header(Kind::File(meta.len())), Some(&mut f))
                    .map_err(|e| OpsError::io("archiving", &path, e))?;
                summary.files += 1;
                summary.bytes += meta.len();
            }
            // Sockets and FIFOs are runtime state, not data.
        }
        // Depth first, in name order.
        subdirs.reverse();
        stack.extend(subdirs);
    }

    if let Some((tmp, name)) = &snapshot {
        let meta = std::fs::metadata(&tmp.0).map_err(|e| OpsError::io("reading", &tmp.0, e))?;
        let mut f = File::open(&tmp.0).map_err(|e| OpsError::io("reading", &tmp.0, e))?;
        w.append(
            &Header {
                path: name.clone(),
                mode: 0o640,
                mtime: mtime(&meta),
                kind: Kind::File(meta.len()),
            },
            Some(&mut f),
        )
        .map_err(|e| OpsError::io("archiving", &tmp.0, e))?;
        summary.files += 1;
        summary.bytes += meta.len();
        summary.database = true;
    }
    w.finish()
        .map_err(|e| OpsError::io("finishing the archive for", data_dir, e))?;
    Ok(summary)
}

/// Where archive entry `name` goes under `data_dir`, refusing anything that would escape it.
fn destination(data_dir: &Path, name: &str) -> Result<Option<PathBuf>, OpsError> {
    let mut parts = name.split('/').filter(|p| !p.is_empty() && *p != ".");
    match parts.next() {
        Some(TOP) => {}
        _ => {
            return Err(OpsError::Archive(format!(
                "entry {name} is not under {TOP}/"
            )))
        }
    }
    let mut dest = data_dir.to_path_buf();
    let mut depth = 0;
    for p in parts {
        if p == ".." || p.contains('\\') {
            return Err(OpsError::Archive(format!("unsafe entry name {name}")));
        }
        dest.push(p);
        depth += 1;
    }
    Ok((depth > 0).then_some(dest))
}

/// Refuses to write through a symlink that an earlier entry (or the existing volume) placed on
/// the way to `dest`.
fn no_symlink_on_the_way(data_dir: &Path, dest: &Path) -> Result<(), OpsError> {
    let mut p = data_dir.to_path_buf();
    if let Ok(rel) = dest.strip_prefix(data_dir) {
        let comps: Vec<_> = rel.components().collect();
        for c in comps.iter().take(comps.len().saturating_sub(1)) {
            p.push(c);
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(OpsError::Archive(format!(
                    "{} would be written through the symlink {}",
                    dest.display(),
                    p.display()
                )));
            }
        }
    }
    Ok(())
}

/// A symlink target must stay inside the data directory (certbot's `live/` links do).
fn safe_link(data_dir: &Path, link: &Path, target: &str) -> Result<(), OpsError> {
    let unsafe_link = || {
        OpsError::Archive(format!(
            "link {} points outside the data directory",
            link.display()
        ))
    };
    if target.starts_with('/') {
        return Err(unsafe_link());
    }
    let mut depth = link
        .strip_prefix(data_dir)
        .map_err(|_| unsafe_link())?
        .components()
        .count() as i64
        - 1;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => depth -= 1,
            _ => depth += 1,
        }
        if depth < 0 {
            return Err(unsafe_link());
        }
    }
    Ok(())
}

#[cfg(unix)]
fn apply_owner_and_mode(
    path: &Path,
    mode: u32,
    config: &Config,
    is_link: bool,
) -> Result<(), OpsError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !is_link {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o777))
            .map_err(|e| OpsError::io("setting permissions of", path, e))?;
    }
    // Like the daemon: PUID/PGID are applied only when both are non-zero and we are root.
    if let (Some(uid), Some(gid)) = (config.puid, config.pgid) {
        let am_root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        if uid != 0 && gid != 0 && am_root {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid))
                .map_err(|e| OpsError::io("changing owner of", path, e))?;
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn apply_owner_and_mode(_: &Path, _: u32, _: &Config, _: bool) -> Result<(), OpsError> {
    Ok(())
}

/// Extracts an archive into `config`'s data directory. The database is written to a temporary
/// name, checked, and only then moved into place.
pub async fn read_backup<R: Read>(
    config: &Config,
    input: R,
    force: bool,
) -> Result<Summary, OpsError> {
    let data_dir = config.data_dir.clone();
    let db = sqlite_path(config).map(Path::to_path_buf);
    if let Some(db) = &db {
        let in_use = db.metadata().is_ok_and(|m| m.len() > 0);
        if in_use && !force {
            return Err(OpsError::Refused(format!(
                "{} already holds a database; restore into a fresh volume, or stop the server and use --force to replace it",
                db.display()
            )));
        }
    }
    std::fs::create_dir_all(&data_dir).map_err(|e| OpsError::io("creating", &data_dir, e))?;
    let db_entry = match &db {
        Some(db) if db.starts_with(&data_dir) => Some(entry_name(&data_dir, db)?),
        Some(_) => Some(format!("{TOP}/server/snikket.sqlite")),
        None => None,
    };
    let mut summary = Summary::default();
    let mut staged_db: Option<TempFile> = None;
    let mut reader = Reader::new(input);
    let mut saw_top = false;
    while let Some(h) = reader.next_header()? {
        let Some(dest) = destination(&data_dir, &h.path)? else {
            saw_top = true;
            continue;
        };
        no_symlink_on_the_way(&data_dir, &dest)?;
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| OpsError::io("creating", parent, e))?;
        }
        match &h.kind {
            Kind::Dir => {
                if std::fs::symlink_metadata(&dest).is_ok_and(|m| !m.is_dir()) {
                    std::fs::remove_file(&dest).map_err(|e| OpsError::io("replacing", &dest, e))?;
                }
                std::fs::create_dir_all(&dest).map_err(|e| OpsError::io("creating", &dest, e))?;
                apply_owner_and_mode(&dest, h.mode, config, false)?;
            }
            Kind::Symlink(target) => {
                safe_link(&data_dir, &dest, target)?;
                if std::fs::symlink_metadata(&dest).is_ok() {
                    std::fs::remove_file(&dest).map_err(|e| OpsError::io("replacing", &dest, e))?;
                }
                #[cfg(unix)]
                std::os::unix::fs::symlink(target, &dest)
                    .map_err(|e| OpsError::io("linking", &dest, e))?;
                apply_owner_and_mode(&dest, h.mode, config, true)?;
            }
            Kind::File(size) => {
                let is_db = db_entry.as_deref() == Some(h.path.trim_end_matches('/'));
                let target = match (&db, is_db) {
                    (Some(db), true) => {
                        let tmp = db.with_extension("sqlite.restoring");
                        if let Some(p) = tmp.parent() {
                            std::fs::create_dir_all(p)
                                .map_err(|e| OpsError::io("creating", p, e))?;
                        }
                        staged_db = Some(TempFile(tmp.clone()));
                        tmp
                    }
                    _ => dest.clone(),
                };
                if std::fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_symlink()) {
                    std::fs::remove_file(&target)
                        .map_err(|e| OpsError::io("replacing", &target, e))?;
                }
                let f = File::create(&target).map_err(|e| OpsError::io("creating", &target, e))?;
                let mut out = BufWriter::new(f);
                reader.copy_data(*size, &mut out)?;
                out.flush()
                    .map_err(|e| OpsError::io("writing", &target, e))?;
                apply_owner_and_mode(&target, h.mode, config, false)?;
                summary.files += 1;
                summary.bytes += size;
            }
        }
    }
    if !saw_top && summary.files == 0 {
        return Err(OpsError::Archive("the archive is empty".into()));
    }
    if let (Some(db), Some(staged)) = (&db, &staged_db) {
        let url = format!("sqlite://{}", staged.0.display());
        let store = Store::open_url(&url).await?;
        let checked = store.check_integrity().await;
        store.close().await;
        checked?;
        for suffix in ["-wal", "-shm", "-journal"] {
            let mut p = db.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(p));
        }
        std::fs::rename(&staged.0, db).map_err(|e| OpsError::io("moving into place", db, e))?;
        summary.database = true;
    }
    Ok(summary)
}

/// The `backup` command.
pub async fn main_backup(config: &Config, args: &BackupArgs) -> Result<bool, OpsError> {
    let summary = if is_stdio(&args.file) {
        let stdout = std::io::stdout();
        write_backup(config, BufWriter::new(stdout.lock()), None).await?
    } else {
        let path = &args.file;
        let f = File::options()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| OpsError::io("creating", path, e))?;
        let exclude = std::fs::canonicalize(path).ok();
        let done = write_backup(config, BufWriter::new(f), exclude.as_deref()).await;
        if done.is_err() {
            let _ = std::fs::remove_file(path);
        }
        done?
    };
    eprintln!(
        "backup: {} files, {} bytes{}",
        summary.files,
        summary.bytes,
        if summary.database {
            ", database included"
        } else {
            ""
        }
    );
    if !summary.database {
        eprintln!("backup: the PostgreSQL database is not included; back it up with: pg_dump -Fc \"$SNIKKET_TWEAK_DATABASE_URL\" > snikket.pgdump");
    }
    Ok(true)
}

/// The `restore` command.
pub async fn main_restore(config: &Config, args: &RestoreArgs) -> Result<bool, OpsError> {
    // Replacing the database under a running server would lose or corrupt data.
    if health::probe(health::health_addr(config)).await.is_ok() {
        return Err(OpsError::Refused(
            "the server is running: stop it first (docker compose stop snikket_server), then run restore in a one-off container".into(),
        ));
    }
    let summary = if is_stdio(&args.file) {
        let stdin = std::io::stdin();
        read_backup(config, BufReader::new(stdin.lock()), args.force).await?
    } else {
        let f = File::open(&args.file).map_err(|e| OpsError::io("opening", &args.file, e))?;
        read_backup(config, BufReader::new(f), args.force).await?
    };
    eprintln!(
        "restore: {} files, {} bytes into {}{}",
        summary.files,
        summary.bytes,
        config.data_dir.display(),
        if summary.database {
            ", database checked"
        } else {
            ""
        }
    );
    if sqlite_path(config).is_none() {
        eprintln!("restore: restore the PostgreSQL database separately: pg_restore -d \"$SNIKKET_TWEAK_DATABASE_URL\" snikket.pgdump");
    } else if !summary.database {
        eprintln!("restore: warning: the archive held no database");
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn config(dir: &Path) -> Config {
        let mut vars = BTreeMap::new();
        vars.insert("SNIKKET_DOMAIN".to_string(), "chat.example.com".to_string());
        vars.insert(
            "SNIKKET_ADMIN_EMAIL".to_string(),
            "a@example.com".to_string(),
        );
        vars.insert(
            "SNIKKET_TWEAK_DATA_DIR".to_string(),
            dir.display().to_string(),
        );
        Config::from_vars(&vars).unwrap()
    }

    #[test]
    fn destinations_never_escape() {
        let d = Path::new("/data");
        assert_eq!(
            destination(d, "snikket/a/b").unwrap(),
            Some(PathBuf::from("/data/a/b"))
        );
        assert_eq!(destination(d, "snikket/").unwrap(), None);
        assert_eq!(
            destination(d, "./snikket/x").unwrap(),
            Some(PathBuf::from("/data/x"))
        );
        for bad in [
            "snikket/../etc/passwd",
            "etc/passwd",
            "/snikket/../../x",
            "other/x",
        ] {
            assert!(destination(d, bad).is_err(), "{bad}");
        }
        let link = Path::new("/data/letsencrypt/live/d/cert.pem");
        assert!(safe_link(d, link, "../../archive/d/cert1.pem").is_ok());
        assert!(safe_link(d, link, "../../../../etc/shadow").is_err());
        assert!(safe_link(d, link, "/etc/shadow").is_err());
    }

    #[test]
    fn live_database_files_are_recognised() {
        let db = Some(Path::new("/d/server/snikket.sqlite"));
        for p in [
            "/d/server/snikket.sqlite",
            "/d/server/snikket.sqlite-wal",
            "/d/server/snikket.sqlite-shm",
        ] {
            assert!(is_live_database(Path::new(p), db), "{p}");
        }
        for p in [
            "/d/server/snikket.sqlite.bak",
            "/d/other/snikket.sqlite",
            "/d/server/uploads",
        ] {
            assert!(!is_live_database(Path::new(p), db), "{p}");
        }
        assert!(!is_live_database(
            Path::new("/d/server/snikket.sqlite"),
            None
        ));
    }

    #[tokio::test]
    async fn round_trip_keeps_database_secrets_and_links() {
        let src = snikket_testkit::temp_dir();
        let c = config(src.path());
        let data = crate::init::prepare(&c).await.unwrap();
        data.store.create_circle("Friends").await.unwrap();
        data.store.close().await;
        let live = c.cert_live_dir();
        let archive_dir = c.letsencrypt_dir().join("archive").join("chat.example.com");
        std::fs::create_dir_all(&live).unwrap();
        std::fs::create_dir_all(&archive_dir).unwrap();
        std::fs::write(archive_dir.join("fullchain1.pem"), "CERT").unwrap();
        std::os::unix::fs::symlink(
            "../../archive/chat.example.com/fullchain1.pem",
            live.join("fullchain.pem"),
        )
        .unwrap();

        let mut bytes = Vec::new();
        let s = write_backup(&c, &mut bytes, None).await.unwrap();
        assert!(s.database);

        let dst = snikket_testkit::temp_dir();
        let c2 = config(&dst.path().join("fresh"));
        let r = read_backup(&c2, &bytes[..], false).await.unwrap();
        assert!(r.database);
        assert_eq!(r.files, s.files);
        assert_eq!(
            std::fs::read(c.turn_secret_path()).unwrap(),
            std::fs::read(c2.turn_secret_path()).unwrap()
        );
        assert_eq!(
            std::fs::read_to_string(c2.cert_live_dir().join("fullchain.pem")).unwrap(),
            "CERT"
        );
        assert!(
            std::fs::symlink_metadata(c2.cert_live_dir().join("fullchain.pem"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let store = Store::open(&c2.server.database).await.unwrap();
        assert!(store.find_circle("Friends").await.unwrap().is_some());
        store.close().await;
        // No temporary snapshot is left behind on either side.
        for dir in [c.server_dir(), c2.server_dir()] {
            let names: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert!(
                !names
                    .iter()
                    .any(|n| n.starts_with(".backup-") || n.ends_with(".restoring")),
                "{names:?}"
            );
        }

        // A second restore over the now non-empty volume needs --force.
        let e = read_backup(&c2, &bytes[..], false).await.unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        read_backup(&c2, &bytes[..], true).await.unwrap();
    }

    #[tokio::test]
    async fn hostile_archives_are_refused() {
        let mut w = Writer::new(Vec::new());
        w.append(
            &Header {
                path: "snikket/evil".into(),
                mode: 0o777,
                mtime: 0,
                kind: Kind::Symlink("/etc".into()),
            },
            None,
        )
        .unwrap();
        let bytes = w.finish().unwrap();
        let dst = snikket_testkit::temp_dir();
        let e = read_backup(&config(dst.path()), &bytes[..], false)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("outside the data directory"), "{e}");

        let mut w = Writer::new(Vec::new());
        w.append(
            &Header {
                path: "snikket/../x".into(),
                mode: 0o644,
                mtime: 0,
                kind: Kind::File(1),
            },
            Some(&mut &b"x"[..]),
        )
        .unwrap();
        let bytes = w.finish().unwrap();
        assert!(read_backup(&config(dst.path()), &bytes[..], false)
            .await
            .is_err());
        assert!(!dst.path().parent().unwrap().join("x").exists());
    }

    #[tokio::test]
    async fn backup_refuses_without_a_database() {
        let dir = snikket_testkit::temp_dir();
        let e = write_backup(&config(dir.path()), Vec::new(), None)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("start the server once"), "{e}");
    }
}
