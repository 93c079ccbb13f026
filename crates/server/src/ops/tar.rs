//! A small POSIX ustar writer and reader for backups: regular files, directories and symlinks.
//!
//! Written by hand because that is all a backup needs (about 200 lines against a new dependency),
//! and the output is a plain tar that `tar tf` lists and Snikket's `restore.sh` can unpack.
//! The reader also accepts GNU long names and skips pax headers, so archives made by GNU tar of
//! an uncompressed `/snikket` restore too.

use crate::ops::OpsError;
use std::io::{Read, Write};

const BLOCK: usize = 512;
/// Largest file size the 11-digit octal size field holds (8 GiB - 1).
const MAX_SIZE: u64 = 0o77_777_777_777;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A regular file of this many bytes (the data follows the header).
    File(u64),
    /// A directory.
    Dir,
    /// A symbolic link to this target.
    Symlink(String),
}

/// One archive member's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Relative path with `/` separators (directories without a trailing slash).
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, Unix seconds.
    pub mtime: u64,
    /// Type and size.
    pub kind: Kind,
}

fn bad(msg: impl Into<String>) -> OpsError {
    OpsError::Archive(msg.into())
}

fn octal(field: &mut [u8], value: u64) -> Result<(), OpsError> {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    if text.len() > digits {
        return Err(bad(format!("value {value} does not fit a tar header")));
    }
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
    Ok(())
}

/// Encodes a header block; long paths use the ustar prefix field (up to 255 bytes in all).
pub fn encode(h: &Header) -> Result<[u8; BLOCK], OpsError> {
    let mut b = [0u8; BLOCK];
    let mut path = h.path.clone();
    if h.kind == Kind::Dir {
        path.push('/');
    }
    let (prefix, name) = if path.len() <= 100 {
        (String::new(), path.clone())
    } else {
        // Split at a '/' so that name <= 100 and prefix <= 155.
        let split = path
            .char_indices()
            .rev()
            .filter(|&(i, c)| c == '/' && i <= 155 && path.len() - i - 1 <= 100)
            .map(|(i, _)| i)
            .next()
            .ok_or_else(|| bad(format!("path too long for a tar header: {path}")))?;
        (path[..split].to_string(), path[split + 1..].to_string())
    };
    b[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut b[100..108], u64::from(h.mode & 0o7777))?;
    octal(&mut b[108..116], 0)?;
    octal(&mut b[116..124], 0)?;
    let (size, flag) = match &h.kind {
        Kind::File(n) if *n > MAX_SIZE => {
            return Err(bad(format!("{} is larger than 8 GiB", h.path)))
        }
        Kind::File(n) => (*n, b'0'),
        Kind::Dir => (0, b'5'),
        Kind::Symlink(target) => {
            if target.len() > 100 {
                return Err(bad(format!("link target too long: {target}")));
            }
            b[157..157 + target.len()].copy_from_slice(target.as_bytes());
            (0, b'2')
        }
    };
    octal(&mut b[124..136], size)?;
    octal(&mut b[136..148], h.mtime)?;
    b[156] = flag;
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    b[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    let text = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(text.as_bytes());
    Ok(b)
}

/// Streams entries into an archive.
pub struct Writer<W: Write> {
    out: W,
}

impl<W: Write> Writer<W> {
    /// Starts an archive on `out`.
    pub fn new(out: W) -> Self {
        Writer { out }
    }

    /// Appends an entry; for a file, exactly `size` bytes are copied from `data`.
    pub fn append(&mut self, h: &Header, data: Option<&mut dyn Read>) -> std::io::Result<()> {
        let block = encode(h)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        self.out.write_all(&block)?;
        if let Kind::File(size) = h.kind {
            let reader = data.ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "file entry without data")
            })?;
            let copied = std::io::copy(&mut reader.take(size), &mut self.out)?;
            if copied != size {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{} shrank while being archived", h.path),
                ));
            }
            let pad = (BLOCK - (size as usize % BLOCK)) % BLOCK;
            self.out.write_all(&[0u8; BLOCK][..pad])?;
        }
        Ok(())
    }

    /// Writes the end-of-archive marker and returns the output.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn field_str(b: &[u8]) -> Result<String, OpsError> {
    let end = b.iter().position(|&x| x == 0).unwrap_or(b.len());
    String::from_utf8(b[..end].to_vec()).map_err(|_| bad("non-UTF-8 name in archive"))
}

fn field_num(b: &[u8]) -> Result<u64, OpsError> {
    let s = field_str(b)?;
    let s = s.trim_matches(|c: char| c == ' ' || c == '\0');
    if s.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(s, 8).map_err(|_| bad(format!("bad number {s:?} in tar header")))
}

/// Reads entries one after the other.
pub struct Reader<R: Read> {
    input: R,
    /// Bytes of the current file's data (plus padding) not consumed yet.
    pending: u64,
}

impl<R: Read> Reader<R> {
    /// Starts reading an archive.
    pub fn new(input: R) -> Self {
        Reader { input, pending: 0 }
    }

    fn block(&mut self) -> Result<Option<[u8; BLOCK]>, OpsError> {
        let mut b = [0u8; BLOCK];
        let mut got = 0;
        while got < BLOCK {
            let n = self
                .input
                .read(&mut b[got..])
                .map_err(|e| bad(format!("reading: {e}")))?;
            if n == 0 {
                return if got == 0 {
                    Ok(None)
                } else {
                    Err(bad("truncated archive"))
                };
            }
            got += n;
        }
        Ok(Some(b))
    }

    fn skip_pending(&mut self) -> Result<(), OpsError> {
        let n = self.pending;
        self.pending = 0;
        let copied = std::io::copy(&mut (&mut self.input).take(n), &mut std::io::sink())
            .map_err(|e| bad(format!("reading: {e}")))?;
        if copied != n {
            return Err(bad("truncated archive"));
        }
        Ok(())
    }

    fn data(&mut self, size: u64) -> Result<Vec<u8>, OpsError> {
        let mut v = Vec::new();
        (&mut self.input)
            .take(size)
            .read_to_end(&mut v)
            .map_err(|e| bad(format!("reading: {e}")))?;
        if v.len() as u64 != size {
            return Err(bad("truncated archive"));
        }
        self.pending = padded(size) - size;
        self.skip_pending()?;
        Ok(v)
    }

    /// The next entry, `None` at the end. For a file, read its data with [`Reader::copy_data`]
    /// before asking for the next entry (or it is skipped).
    pub fn next_header(&mut self) -> Result<Option<Header>, OpsError> {
        self.skip_pending()?;
        let mut long_name: Option<String> = None;
        loop {
            let Some(b) = self.block()? else {
                return Ok(None);
            };
            if b.iter().all(|&x| x == 0) {
                return Ok(None);
            }
            let stored = field_num(&b[148..156])?;
            let mut copy = b;
            copy[148..156].copy_from_slice(b"        ");
            let sum: u64 = copy.iter().map(|&x| u64::from(x)).sum();
            if sum != stored {
                return Err(bad(
                    "header checksum mismatch (not a tar file, or compressed?)",
                ));
            }
            let size = field_num(&b[124..136])?;
            let flag = b[156];
            match flag {
                b'L' => {
                    let raw = self.data(size)?;
                    let end = raw.iter().position(|&x| x == 0).unwrap_or(raw.len());
                    long_name = Some(
                        String::from_utf8(raw[..end].to_vec())
                            .map_err(|_| bad("non-UTF-8 long name"))?,
                    );
                    continue;
                }
                b'x' | b'g' => {
                    self.pending = padded(size);
                    self.skip_pending()?;
                    continue;
                }
                _ => {}
            }
            let mut path = match long_name.take() {
                Some(n) => n,
                None => {
                    let name = field_str(&b[..100])?;
                    let prefix = if &b[257..262] == b"ustar" {
                        field_str(&b[345..500])?
                    } else {
                        String::new()
                    };
                    if prefix.is_empty() {
                        name
                    } else {
                        format!("{prefix}/{name}")
                    }
                }
            };
            while path.ends_with('/') {
                path.pop();
            }
            let mode = u32::try_from(field_num(&b[100..108])? & 0o7777).unwrap_or(0o644);
            let mtime = field_num(&b[136..148])?;
            let kind = match flag {
                b'0' | 0 | b'7' => {
                    self.pending = padded(size);
                    Kind::File(size)
                }
                b'5' => Kind::Dir,
                b'2' => Kind::Symlink(field_str(&b[157..257])?),
                other => {
                    return Err(bad(format!(
                        "unsupported entry type {:?} for {path}",
                        char::from(other)
                    )))
                }
            };
            return Ok(Some(Header {
                path,
                mode,
                mtime,
                kind,
            }));
        }
    }

    /// Copies the current file's data to `out`.
    pub fn copy_data(&mut self, size: u64, out: &mut dyn Write) -> Result<(), OpsError> {
        let copied = std::io::copy(&mut (&mut self.input).take(size), out)
            .map_err(|e| bad(format!("extracting: {e}")))?;
        if copied != size {
            return Err(bad("truncated archive"));
        }
        self.pending = padded(size) - size;
        self.skip_pending()
    }
}

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK as u64) * BLOCK as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, data: &[u8]) -> (Header, Vec<u8>) {
        (
            Header {
                path: path.into(),
                mode: 0o640,
                mtime: 1_700_000_000,
                kind: Kind::File(data.len() as u64),
            },
            data.to_vec(),
        )
    }

    fn archive() -> Vec<u8> {
        let mut w = Writer::new(Vec::new());
        w.append(
            &Header {
                path: "snikket".into(),
                mode: 0o755,
                mtime: 1,
                kind: Kind::Dir,
            },
            None,
        )
        .unwrap();
        let long = format!("snikket/{}/f.bin", "d".repeat(120));
        for (h, data) in [
            file("snikket/a.txt", b"hello"),
            file(&long, &[7u8; 1000]),
            file("snikket/empty", b""),
        ] {
            w.append(&h, Some(&mut &data[..])).unwrap();
        }
        w.append(
            &Header {
                path: "snikket/link".into(),
                mode: 0o777,
                mtime: 1,
                kind: Kind::Symlink("a.txt".into()),
            },
            None,
        )
        .unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn round_trip() {
        let bytes = archive();
        assert_eq!(bytes.len() % BLOCK, 0);
        let mut r = Reader::new(&bytes[..]);
        let h = r.next_header().unwrap().unwrap();
        assert_eq!((h.path.as_str(), h.kind), ("snikket", Kind::Dir));
        let h = r.next_header().unwrap().unwrap();
        assert_eq!(h.path, "snikket/a.txt");
        assert_eq!(h.mode, 0o640);
        let mut out = Vec::new();
        r.copy_data(5, &mut out).unwrap();
        assert_eq!(out, b"hello");
        // The long name is not read: skipping its data must still find the next header.
        let h = r.next_header().unwrap().unwrap();
        assert_eq!(h.path, format!("snikket/{}/f.bin", "d".repeat(120)));
        let h = r.next_header().unwrap().unwrap();
        assert_eq!((h.path.as_str(), h.kind), ("snikket/empty", Kind::File(0)));
        let h = r.next_header().unwrap().unwrap();
        assert_eq!(h.kind, Kind::Symlink("a.txt".into()));
        assert!(r.next_header().unwrap().is_none());
    }

    #[test]
    fn system_tar_agrees() {
        // GNU tar reads what we write; skip quietly only if tar is not installed at all.
        let Ok(mut child) = std::process::Command::new("tar")
            .args(["tvf", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            return;
        };
        child.stdin.take().unwrap().write_all(&archive()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(listing.contains("snikket/a.txt"), "{listing}");
        assert!(listing.contains("snikket/link -> a.txt"), "{listing}");
        assert!(listing.contains(&"d".repeat(120)), "{listing}");
    }

    #[test]
    fn damaged_or_truncated_archives_are_errors() {
        let mut bytes = archive();
        bytes[BLOCK + 3] ^= 0xff;
        let mut r = Reader::new(&bytes[..]);
        r.next_header().unwrap();
        assert!(r.next_header().is_err(), "checksum catches a flipped byte");

        let bytes = archive();
        let mut r = Reader::new(&bytes[..BLOCK * 3 + 100]);
        r.next_header().unwrap();
        r.next_header().unwrap();
        assert!(r.copy_data(5, &mut Vec::new()).is_ok());
        assert!(r.next_header().is_err(), "a cut-off header is an error");

        let gz = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0];
        let mut padded_gz = gz.to_vec();
        padded_gz.resize(BLOCK, 1);
        assert!(Reader::new(&padded_gz[..]).next_header().is_err());
    }
}
