//! Atomic file writes: a reader sees the old file or the new one, never half of either.

use crate::RuntimeError;
use std::io::Write;
use std::path::Path;

/// Writes `data` to `path` via a temporary file in the same directory, fsync and rename.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), RuntimeError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| RuntimeError::io("creating", dir, e))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp-{:08x}", rand::random::<u32>()));
    let result = (|| {
        let mut f =
            open_with_mode(&tmp, mode).map_err(|e| RuntimeError::io("creating", &tmp, e))?;
        f.write_all(data)
            .map_err(|e| RuntimeError::io("writing", &tmp, e))?;
        f.sync_all()
            .map_err(|e| RuntimeError::io("syncing", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| RuntimeError::io("renaming into", path, e))?;
        sync_dir(dir);
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates `path` with `data` only if it does not exist yet, atomically: concurrent creators agree
/// on one winner. Returns `true` if this call created it.
pub fn create_exclusive(path: &Path, data: &[u8], mode: u32) -> Result<bool, RuntimeError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| RuntimeError::io("creating", dir, e))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.new-{:08x}", rand::random::<u32>()));
    let mut f = open_with_mode(&tmp, mode).map_err(|e| RuntimeError::io("creating", &tmp, e))?;
    let written = f.write_all(data).and_then(|_| f.sync_all());
    drop(f);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(RuntimeError::io("writing", &tmp, e));
    }
    // A hard link fails if the target exists, which makes the publish step exclusive.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(dir);
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(RuntimeError::io("publishing", path, e)),
    }
}

#[cfg(unix)]
fn open_with_mode(path: &Path, mode: u32) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
}

#[cfg(not(unix))]
fn open_with_mode(path: &Path, _mode: u32) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_exclusive_create_has_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/f.txt");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let q = dir.path().join("secret");
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let q = q.clone();
                std::thread::spawn(move || {
                    create_exclusive(&q, format!("v{i}").as_bytes(), 0o600).unwrap()
                })
            })
            .collect();
        let winners = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|w| *w)
            .count();
        assert_eq!(winners, 1);
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 2, "temp files must be cleaned up");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&q).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }
}

/// Gives `root` and everything below it (symlinks themselves, not their targets) to `uid:gid`,
/// like `chown -R`, but only when both ids are non-zero and the process runs as root (Snikket's
/// `PUID`/`PGID` rule). Returns how many entries could not be changed; a missing `root` is 0.
#[cfg(unix)]
pub fn chown_tree(root: &Path, owner: Option<(u32, u32)>) -> usize {
    use std::os::unix::fs::MetadataExt;
    let Some((uid, gid)) = owner.filter(|(u, g)| *u != 0 && *g != 0) else {
        return 0;
    };
    let am_root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !am_root || std::fs::symlink_metadata(root).is_err() {
        return 0;
    }
    let mut failed = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        if std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).is_err() {
            failed += 1;
        }
        let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
        if is_dir {
            match std::fs::read_dir(&path) {
                Ok(entries) => stack.extend(entries.filter_map(|e| e.ok().map(|e| e.path()))),
                Err(_) => failed += 1,
            }
        }
    }
    failed
}

#[cfg(all(test, unix))]
mod chown_tests {
    use super::chown_tree;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn chown_tree_follows_the_puid_rule() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("live/chat.example.com");
        std::fs::create_dir_all(&sub).expect("mkdir");
        std::fs::write(sub.join("cert1.pem"), b"x").expect("write");
        std::os::unix::fs::symlink("cert1.pem", sub.join("cert.pem")).expect("symlink");
        let before = std::fs::metadata(sub.join("cert1.pem"))
            .expect("stat")
            .uid();
        assert_eq!(chown_tree(dir.path(), None), 0);
        assert_eq!(
            chown_tree(dir.path(), Some((0, 1234))),
            0,
            "a zero id disables it"
        );
        assert_eq!(
            std::fs::metadata(sub.join("cert1.pem"))
                .expect("stat")
                .uid(),
            before
        );
        assert_eq!(
            chown_tree(&dir.path().join("missing"), Some((1234, 1234))),
            0
        );
        let root = std::fs::metadata("/proc/self").expect("proc").uid() == 0;
        assert_eq!(chown_tree(dir.path(), Some((1234, 2345))), 0);
        for p in [dir.path().to_path_buf(), sub.clone(), sub.join("cert1.pem")] {
            let m = std::fs::symlink_metadata(&p).expect("stat");
            if root {
                assert_eq!((m.uid(), m.gid()), (1234, 2345), "{}", p.display());
            } else {
                assert_eq!(m.uid(), before, "not root: nothing changes");
            }
        }
        if root {
            let link = std::fs::symlink_metadata(sub.join("cert.pem")).expect("stat");
            assert_eq!(link.uid(), 1234, "the link itself");
        }
    }
}
