//! File sharing: the `share.DOMAIN` HTTP File Upload service (XEP-0363, spec 3.6).
//!
//! A client asks `share.DOMAIN` for a slot; quotas are checked and the slot is stored with the
//! SHA-256 of a fresh secret; the reply carries a PUT URL with that secret as a bearer token and
//! the GET URL everyone the file is shared with will use. The PUT and GET are served by the
//! internal HTTP service (`http.rs`), reached through the web proxy. Files live in
//! `<data>/server/uploads/<slot>` and expire with `SNIKKET_RETENTION_DAYS`.

pub mod http;

use crate::routing::Sender;
use crate::state::{lock, State};
use crate::xml::{self, el, text_el};
use minidom::Element;
use rand::RngCore;
use sha2::{Digest, Sha256};
use snikket_config::{url_escape, Config};
use snikket_store::{QuotaExceeded, Store, Upload};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;

/// `urn:xmpp:http:upload:0`.
pub const NS_UPLOAD: &str = "urn:xmpp:http:upload:0";
/// Largest file accepted: 100 MiB plus 16 bytes, so an encrypted 100 MiB file with its GCM tag fits.
pub const MAX_FILE_SIZE: u64 = 104_857_616;
/// How long a slot's PUT secret is valid, in seconds.
pub const PUT_TTL_SECS: i64 = 600;
/// Slots never uploaded to are forgotten after this many seconds.
const ABANDONED_SECS: i64 = 3600;
/// Longest file name accepted, in bytes.
const MAX_FILENAME: usize = 255;

const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
use crate::xml::NS_DATA;

/// The upload service: where files go, the URLs handed out and the quotas.
pub struct Uploads {
    dir: PathBuf,
    base_url: String,
    daily: u64,
    global: Option<u64>,
    retention_secs: i64,
    /// Slots with a PUT in progress (a second concurrent PUT is refused).
    busy: Mutex<HashSet<String>>,
}

impl Uploads {
    /// The service for `config`; creates the upload directory.
    pub fn open(config: &Config) -> std::io::Result<Uploads> {
        let dir = config.server_dir().join("uploads");
        std::fs::create_dir_all(&dir)?;
        Ok(Uploads::new(config, dir))
    }

    fn new(config: &Config, dir: PathBuf) -> Uploads {
        let host = if config.server.share_on_main_domain {
            config.domain.ascii.clone()
        } else {
            config.share_domain()
        };
        let port = match config.proxy.https_port {
            443 => String::new(),
            p => format!(":{p}"),
        };
        Uploads {
            dir,
            base_url: format!("https://{host}{port}/upload/"),
            daily: config
                .server
                .daily_upload_limit_bytes
                .unwrap_or(10 * MAX_FILE_SIZE),
            global: config.server.upload_storage_bytes,
            retention_secs: i64::from(config.server.retention_days) * 86_400,
            busy: Mutex::new(HashSet::new()),
        }
    }

    /// The file of a slot.
    fn path(&self, slot: &str) -> PathBuf {
        self.dir.join(slot)
    }

    /// The file of a slot while its upload is in progress.
    fn part_path(&self, slot: &str) -> PathBuf {
        self.dir.join(format!("{slot}.part"))
    }

    /// The GET (and PUT) URL of a slot.
    fn url(&self, slot: &str, filename: &str) -> String {
        format!("{}{slot}/{}", self.base_url, url_escape(filename))
    }

    /// Whether a slot handed out at `created_at` has expired.
    fn expired(&self, created_at: i64) -> bool {
        created_at < snikket_store::now() - self.retention_secs
    }

    /// Marks `slot` as being uploaded; `None` if it already is.
    fn claim(&self, slot: &str) -> Option<Claim<'_>> {
        lock(&self.busy).insert(slot.to_string()).then(|| Claim {
            uploads: self,
            slot: slot.to_string(),
        })
    }

    /// Removes expired and abandoned slots with their files; returns how many went.
    pub async fn expire(&self, store: &Store) -> Result<u64, snikket_store::StoreError> {
        let now = snikket_store::now();
        let mut total = 0;
        loop {
            let slots = store
                .uploads_expired(now - self.retention_secs, now - ABANDONED_SECS, 500)
                .await?;
            if slots.is_empty() {
                return Ok(total);
            }
            for slot in &slots {
                for path in [self.path(slot), self.part_path(slot)] {
                    match tokio::fs::remove_file(&path).await {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            tracing::warn!(path = %path.display(), error = %e, "cannot remove expired upload")
                        }
                    }
                }
            }
            total += store.uploads_delete(&slots).await?;
            if slots.len() < 500 {
                return Ok(total);
            }
        }
    }
}

/// A slot being uploaded; released on drop.
struct Claim<'a> {
    uploads: &'a Uploads,
    slot: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        lock(&self.uploads.busy).remove(&self.slot);
    }
}

/// SHA-256 of a PUT secret, hex.
fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn random(bytes: usize) -> String {
    use base64::Engine;
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Whether `s` looks like a slot id we made (URL-safe base64), so it can name a file.
fn valid_slot(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The content type to store: the client's if it is a plausible media type, else
/// `application/octet-stream`.
fn content_type(given: Option<&str>) -> String {
    match given {
        Some(t)
            if !t.is_empty()
                && t.len() <= 255
                && t.contains('/')
                && t.bytes().all(|b| b.is_ascii_graphic() || b == b' ') =>
        {
            t.to_string()
        }
        _ => "application/octet-stream".to_string(),
    }
}

/// IQs addressed to `share.DOMAIN`.
pub async fn iq(state: &State, me: &Sender, iq: &Element) -> Element {
    let get = iq.attr("type") == Some("get");
    let payload = xml::payload(iq);
    match (get, payload.map(|p| (p.name(), p.ns()))) {
        (true, Some(("query", ns))) if ns == NS_DISCO_INFO => {
            match payload.and_then(|q| q.attr("node")) {
                None => xml::iq_result(iq, Some(disco_info())),
                Some(_) => xml::error_reply(iq, "item-not-found", None),
            }
        }
        (true, Some(("query", ns))) if ns == NS_DISCO_ITEMS => {
            xml::iq_result(iq, Some(el("query", NS_DISCO_ITEMS, &[], vec![])))
        }
        (true, Some(("ping", ns))) if ns == "urn:xmpp:ping" => xml::iq_result(iq, None),
        (true, Some(("request", ns))) if ns == NS_UPLOAD => match payload {
            Some(request) => slot(state, me, iq, request).await,
            None => xml::error_reply(iq, "bad-request", None),
        },
        _ => xml::error_reply(iq, "service-unavailable", None),
    }
}

/// The service's disco#info (spec 3.6): identity, feature and the XEP-0128 size form.
pub fn disco_info() -> Element {
    let field = xml::form_field;
    el(
        "query",
        NS_DISCO_INFO,
        &[],
        vec![
            el(
                "identity",
                NS_DISCO_INFO,
                &[
                    ("category", "store"),
                    ("type", "file"),
                    ("name", "HTTP File Upload"),
                ],
                vec![],
            ),
            el("feature", NS_DISCO_INFO, &[("var", NS_DISCO_INFO)], vec![]),
            el("feature", NS_DISCO_INFO, &[("var", NS_DISCO_ITEMS)], vec![]),
            el("feature", NS_DISCO_INFO, &[("var", NS_UPLOAD)], vec![]),
            el(
                "x",
                NS_DATA,
                &[("type", "result")],
                vec![
                    field("FORM_TYPE", Some("hidden"), NS_UPLOAD),
                    field("max-file-size", None, &MAX_FILE_SIZE.to_string()),
                ],
            ),
        ],
    )
}

/// Error reply with an extra application-specific child inside `<error/>`.
fn error_with(iq: &Element, condition: &str, text: &str, app: Element) -> Element {
    let mut reply = xml::error_reply(iq, condition, Some(text));
    if let Some(err) = reply.get_child_mut("error", xml::NS_CLIENT) {
        err.append_child(app);
    }
    reply
}

/// A slot request (XEP-0363 §4).
async fn slot(state: &State, me: &Sender, iq: &Element, request: &Element) -> Element {
    let uploads = &state.uploads;
    let filename = request.attr("filename").unwrap_or("");
    if filename.is_empty()
        || filename.len() > MAX_FILENAME
        || filename.contains('/')
        || filename.chars().any(char::is_control)
    {
        return xml::error_reply(iq, "bad-request", Some("Invalid filename"));
    }
    let Some(size) = request.attr("size").and_then(|s| s.parse::<u64>().ok()) else {
        return xml::error_reply(iq, "bad-request", Some("Missing or invalid file size"));
    };
    if size > MAX_FILE_SIZE {
        let max = el(
            "file-too-large",
            NS_UPLOAD,
            &[],
            vec![text_el(
                "max-file-size",
                NS_UPLOAD,
                &MAX_FILE_SIZE.to_string(),
            )],
        );
        return error_with(iq, "not-acceptable", "File too large", max);
    }
    let token = random(32);
    let upload = Upload {
        slot: random(18),
        username: me.username.clone(),
        filename: filename.to_string(),
        size,
        content_type: content_type(request.attr("content-type")),
        token_hash: token_hash(&token),
        created_at: snikket_store::now(),
        completed_at: None,
    };
    match state
        .store
        .upload_reserve(&upload, Some(uploads.daily), uploads.global)
        .await
    {
        Ok(Ok(())) => {}
        Ok(Err(QuotaExceeded::Daily)) => {
            tracing::info!(user = %me.username, size, "upload refused: daily quota");
            return xml::error_reply(iq, "resource-constraint", Some("Daily quota reached"));
        }
        Ok(Err(QuotaExceeded::Global)) => {
            tracing::warn!(size, "upload refused: server storage quota reached");
            return xml::error_reply(
                iq,
                "resource-constraint",
                Some("Server global storage quota reached"),
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "storing an upload slot failed");
            return xml::error_reply(iq, "internal-server-error", None);
        }
    }
    tracing::debug!(user = %me.username, slot = %upload.slot, size, "upload slot handed out");
    let url = uploads.url(&upload.slot, filename);
    xml::iq_result(
        iq,
        Some(el(
            "slot",
            NS_UPLOAD,
            &[],
            vec![
                el(
                    "put",
                    NS_UPLOAD,
                    &[("url", &url)],
                    vec![{
                        let mut h = text_el("header", NS_UPLOAD, &format!("Bearer {token}"));
                        xml::set_attr(&mut h, "name", "Authorization");
                        h
                    }],
                ),
                el("get", NS_UPLOAD, &[("url", &url)], vec![]),
            ],
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_escape_the_file_name() {
        assert_eq!(url_escape("a b/ä.jpg"), "a%20b%2F%C3%A4.jpg");
        assert_eq!(url_escape("Cat-1_~.png"), "Cat-1_~.png");
    }

    #[test]
    fn slot_ids_are_checked_before_they_name_a_file() {
        assert!(valid_slot(&random(18)));
        for bad in ["", "..", "a/b", "a.part", &"x".repeat(65)] {
            assert!(!valid_slot(bad), "{bad}");
        }
    }

    #[test]
    fn implausible_content_types_become_octet_stream() {
        assert_eq!(content_type(Some("image/png")), "image/png");
        for bad in [None, Some(""), Some("png"), Some("text/html\r\nX: y")] {
            assert_eq!(content_type(bad), "application/octet-stream");
        }
    }

    fn config(vars: &[(&str, &str)]) -> Config {
        let mut all = std::collections::BTreeMap::new();
        all.insert("SNIKKET_DOMAIN".to_string(), "chat.example.com".to_string());
        all.insert(
            "SNIKKET_ADMIN_EMAIL".to_string(),
            "a@example.com".to_string(),
        );
        for (k, v) in vars {
            all.insert(k.to_string(), v.to_string());
        }
        Config::from_vars(&all).unwrap()
    }

    #[test]
    fn urls_follow_the_share_domain_settings() {
        let dir = PathBuf::from("/nonexistent");
        let u = Uploads::new(&config(&[]), dir.clone());
        assert_eq!(
            u.url("abc", "a b.png"),
            "https://share.chat.example.com/upload/abc/a%20b.png"
        );
        assert_eq!(u.daily, 10 * MAX_FILE_SIZE);
        let u = Uploads::new(
            &config(&[
                ("SNIKKET_TWEAK_SHARE_DOMAIN", "1"),
                ("SNIKKET_TWEAK_HTTPS_PORT", "8443"),
            ]),
            dir,
        );
        assert_eq!(
            u.url("abc", "x"),
            "https://chat.example.com:8443/upload/abc/x"
        );
    }

    #[tokio::test]
    async fn expiry_removes_old_and_abandoned_uploads_with_their_files() {
        use snikket_testkit::db::{Backend, TestDb};
        let db = TestDb::create(Backend::Sqlite).await;
        let store = Store::open_url(&db.url).await.unwrap();
        let dir = snikket_testkit::temp_dir();
        let u = Uploads::new(
            &config(&[("SNIKKET_RETENTION_DAYS", "1")]),
            dir.path().into(),
        );
        let now = snikket_store::now();
        for (slot, age, done) in [
            ("old", 2 * 86_400, true),
            ("abandoned", 2 * ABANDONED_SECS, false),
            ("fresh", 60, true),
            ("uploading", 60, false),
        ] {
            let up = Upload {
                slot: slot.into(),
                username: "alice".into(),
                filename: "f".into(),
                size: 1,
                content_type: "text/plain".into(),
                token_hash: String::new(),
                created_at: now - age,
                completed_at: None,
            };
            store
                .upload_reserve(&up, None, None)
                .await
                .unwrap()
                .unwrap();
            if done {
                store.upload_complete(slot).await.unwrap();
                std::fs::write(u.path(slot), "x").unwrap();
            } else {
                std::fs::write(u.part_path(slot), "x").unwrap();
            }
        }
        assert_eq!(u.expire(&store).await.unwrap(), 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["fresh", "uploading.part"]);
        assert!(store.upload("old").await.unwrap().is_none());
        assert!(store.upload("abandoned").await.unwrap().is_none());
        assert!(u.expired(now - 2 * 86_400));
        assert!(!u.expired(now - 60));
        store.close().await;
    }

    #[test]
    fn token_hash_is_hex_sha256() {
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
