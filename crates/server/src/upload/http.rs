//! The HTTP side of file sharing (spec 3.6): `PUT` into a slot with its bearer secret, `GET`/`HEAD`
//! of a stored file (ranges included), CORS for web clients, and an information page at
//! `/upload/`. The body of a PUT is streamed to disk, never held in memory; the file is synced and
//! renamed into place before the slot is marked complete and `201 Created` is answered.

use super::{token_hash, valid_slot, Uploads, PUT_TTL_SECS};
use crate::http::HttpState;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use snikket_store::Upload;
use subtle::ConstantTimeEq;
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;
use tower::ServiceExt;

/// Types shown in the browser rather than downloaded (spec 3.6).
fn inline(content_type: &str) -> bool {
    let t = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    t.starts_with("image/")
        || t.starts_with("video/")
        || t.starts_with("audio/")
        || t == "text/plain"
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// CORS with credentials for web clients: the caller's origin is echoed back.
fn cors(origin: Option<HeaderValue>, mut resp: Response) -> Response {
    if let Some(origin) = origin {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

/// `OPTIONS`: the CORS preflight for a PUT with `Authorization` from a web client.
pub async fn preflight(headers: HeaderMap) -> Response {
    let mut resp = StatusCode::OK.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, PUT, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("7200"),
    );
    cors(headers.get(header::ORIGIN).cloned(), resp)
}

/// `GET /upload/`: what this address is.
pub async fn info() -> Html<&'static str> {
    Html(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>File sharing</title></head>\
         <body><h1>File sharing</h1><p>This address stores the files that people on this Snikket \
         service share in their chats. Files are uploaded and opened by the Snikket app.</p>\
         </body></html>",
    )
}

/// `PUT /upload/<slot>/<name>`.
pub async fn put(
    State(state): State<HttpState>,
    Path((slot, _name)): Path<(String, String)>,
    req: Request,
) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    cors(origin, put_inner(&state, &slot, req).await)
}

async fn find(state: &HttpState, slot: &str) -> Result<Upload, Response> {
    if !valid_slot(slot) {
        return Err(text(StatusCode::NOT_FOUND, "Not found\n"));
    }
    match state.store.upload(slot).await {
        Ok(Some(u)) => Ok(u),
        Ok(None) => Err(text(StatusCode::NOT_FOUND, "Not found\n")),
        Err(e) => {
            tracing::error!(error = %e, "looking up an upload slot failed");
            Err(text(StatusCode::INTERNAL_SERVER_ERROR, "Internal error\n"))
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

async fn put_inner(state: &HttpState, slot: &str, req: Request) -> Response {
    let upload = match find(state, slot).await {
        Ok(u) => u,
        Err(resp) => return resp,
    };
    let Some(token) = bearer(req.headers()) else {
        let mut resp = text(StatusCode::UNAUTHORIZED, "Authorization required\n");
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    };
    let ok: bool = token_hash(token)
        .as_bytes()
        .ct_eq(upload.token_hash.as_bytes())
        .into();
    if !ok {
        tracing::info!(slot, "upload refused: wrong token");
        return text(StatusCode::FORBIDDEN, "Invalid token\n");
    }
    if upload.completed_at.is_some() {
        return text(StatusCode::CONFLICT, "This file was already uploaded\n");
    }
    if snikket_store::now() > upload.created_at + PUT_TTL_SECS {
        return text(StatusCode::FORBIDDEN, "The upload slot has expired\n");
    }
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match length {
        None => return text(StatusCode::LENGTH_REQUIRED, "Content-Length required\n"),
        Some(n) if n > upload.size => {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "Larger than announced\n")
        }
        Some(n) if n < upload.size => {
            return text(StatusCode::BAD_REQUEST, "Smaller than announced\n")
        }
        Some(_) => {}
    }
    let uploads = &state.uploads;
    let Some(_claim) = uploads.claim(slot) else {
        return text(
            StatusCode::CONFLICT,
            "An upload to this slot is in progress\n",
        );
    };
    if let Err(e) = write_file(uploads, &upload, req.into_body()).await {
        return match e {
            WriteError::TooLong => text(StatusCode::PAYLOAD_TOO_LARGE, "Larger than announced\n"),
            WriteError::Short => text(StatusCode::BAD_REQUEST, "Smaller than announced\n"),
            WriteError::Body(e) => {
                tracing::info!(slot, error = %e, "upload aborted by the client");
                text(StatusCode::BAD_REQUEST, "Upload interrupted\n")
            }
            WriteError::Io(e) => {
                tracing::error!(slot, error = %e, "writing an upload failed");
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Could not store the file\n",
                )
            }
        };
    }
    match state.store.upload_complete(slot).await {
        Ok(true) => {
            tracing::info!(user = %upload.username, slot, size = upload.size, "file uploaded");
            text(StatusCode::CREATED, "Created\n")
        }
        Ok(false) => text(StatusCode::CONFLICT, "This file was already uploaded\n"),
        Err(e) => {
            tracing::error!(slot, error = %e, "marking an upload complete failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Could not store the file\n",
            )
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("more bytes than announced")]
    TooLong,
    #[error("fewer bytes than announced")]
    Short,
    #[error("reading the request body: {0}")]
    Body(axum::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Streams `body` into the slot's file: a `.part` file, synced and renamed into place once it
/// has exactly the announced size (and removed otherwise).
async fn write_file(uploads: &Uploads, upload: &Upload, body: Body) -> Result<(), WriteError> {
    let part = uploads.part_path(&upload.slot);
    let result = async {
        let mut file = tokio::fs::File::create(&part).await?;
        let mut written: u64 = 0;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(WriteError::Body)?;
            written = written.saturating_add(chunk.len() as u64);
            if written > upload.size {
                return Err(WriteError::TooLong);
            }
            file.write_all(&chunk).await?;
        }
        if written != upload.size {
            return Err(WriteError::Short);
        }
        file.sync_all().await?;
        drop(file);
        tokio::fs::rename(&part, uploads.path(&upload.slot)).await?;
        // The rename itself is durable once the directory is synced.
        tokio::fs::File::open(&uploads.dir)
            .await?
            .sync_all()
            .await?;
        Ok(())
    }
    .await;
    if result.is_err() {
        if let Err(e) = tokio::fs::remove_file(&part).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %part.display(), error = %e, "cannot remove a partial upload");
            }
        }
    }
    result
}

/// `GET`/`HEAD /upload/<slot>/<name>`: the file with the headers of spec 3.6; ranges, HEAD and
/// conditional requests are handled by `ServeFile`.
pub async fn get(
    State(state): State<HttpState>,
    Path((slot, _name)): Path<(String, String)>,
    req: Request,
) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let upload = match find(&state, &slot).await {
        Ok(u) if u.completed_at.is_some() && !state.uploads.expired(u.created_at) => u,
        Ok(_) => return cors(origin, text(StatusCode::NOT_FOUND, "Not found\n")),
        Err(resp) => return cors(origin, resp),
    };
    let served = tower_http::services::ServeFile::new(state.uploads.path(&slot))
        .oneshot(req)
        .await;
    let mut resp = match served {
        Ok(r) => r.map(Body::new),
        Err(never) => match never {},
    };
    let status = resp.status();
    if status.is_success() || status == StatusCode::NOT_MODIFIED {
        let h = resp.headers_mut();
        let ctype = HeaderValue::from_str(&upload.content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream"));
        h.insert(header::CONTENT_TYPE, ctype);
        let disposition = format!(
            "{}; filename*=UTF-8''{}",
            if inline(&upload.content_type) {
                "inline"
            } else {
                "attachment"
            },
            snikket_config::url_escape(&upload.filename)
        );
        if let Ok(v) = HeaderValue::from_str(&disposition) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
        for (name, value) in [
            (header::CACHE_CONTROL, "max-age=31556952, immutable"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; media-src 'self'; frame-ancestors 'none';",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (HeaderName::from_static("x-xss-protection"), "1; mode=block"),
        ] {
            h.insert(name, HeaderValue::from_static(value));
        }
    }
    cors(origin, resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_and_plain_text_are_inline() {
        for t in [
            "image/png",
            "video/mp4",
            "audio/ogg; codecs=opus",
            "Text/Plain",
        ] {
            assert!(inline(t), "{t}");
        }
        for t in [
            "text/html",
            "application/pdf",
            "application/octet-stream",
            "image",
        ] {
            assert!(!inline(t), "{t}");
        }
    }

    #[test]
    fn bearer_tokens_are_parsed() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }
}
