//! Stored files as HTTP answers: the type from the name, the whole file streamed from
//! the store, or one byte range of it (media elements seek with ranges and read a
//! file's end first), with the object's version as `ETag`: a client that has the file
//! already (`If-None-Match`) gets `304` and no bytes, and a range asked `If-Range` of
//! another version gets the whole new file. Nothing holds a whole file in memory.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use signaling::ApiError;
use tracing::warn;

use crate::routes::jobs::{Objects, storage_unavailable};

/// The most one range answer carries: a player asking for `bytes=0-` of a long
/// recording gets this much and asks on (RFC 9110 lets a server send less).
pub const MAX_RANGE: u64 = 8 * 1024 * 1024;

/// The `Content-Type` of a stored file, by its extension.
pub fn content_type(name: &str) -> &'static str {
    match name
        .rsplit('.')
        .next()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("opus" | "ogg" | "oga") => "audio/ogg",
        Some("webm") => "video/webm",
        Some("mkv") => "video/x-matroska",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        _ => "application/octet-stream",
    }
}

/// What a request asks of a `len`-byte file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Whole,
    /// Inclusive byte positions.
    Range(u64, u64),
    Unsatisfiable,
}

/// One range only (`bytes=a-b`, `a-`, `-n`), at most [`MAX_RANGE`] long; anything else
/// is answered with the whole file, as RFC 9110 allows.
fn asked(headers: &HeaderMap, len: u64) -> Asked {
    let Some(spec) = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Asked::Whole;
    };
    if spec.contains(',') {
        return Asked::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Asked::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let last = len.saturating_sub(1);
    let (start, end) = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(s), Ok(e)) if s <= e => (s, e.min(last)),
        (Ok(s), Err(_)) if b.is_empty() => (s, last),
        (Err(_), Ok(n)) if a.is_empty() && n > 0 => (len.saturating_sub(n), last),
        _ => return Asked::Whole,
    };
    if len == 0 || start >= len {
        return Asked::Unsatisfiable;
    }
    Asked::Range(start, end.min(start + MAX_RANGE - 1))
}

/// A store's version of an object as an HTTP entity tag: quoted, nothing but visible
/// ASCII inside, weak when the store says so (`W/`).
fn entity_tag(version: &str) -> String {
    let (weak, v) = match version.strip_prefix("W/") {
        Some(rest) => ("W/", rest),
        None => ("", version),
    };
    let v: String = v
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"')
        .collect();
    // A store that gives no version: one tag for all, which a client cannot tell
    // apart, so it never skips a download it needs.
    let v = if v.is_empty() {
        "unversioned".into()
    } else {
        v
    };
    format!("{weak}\"{v}\"")
}

/// Whether `If-None-Match` names `etag` (or `*`): weak comparison, as RFC 9110 says.
fn none_match(request: &HeaderMap, etag: &str) -> bool {
    let opaque = etag.trim_start_matches("W/");
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == opaque)
}

/// Whether a range may be answered: no `If-Range`, or one naming this version with a
/// strong tag (a date, or a weak tag, never matches: the whole file goes).
fn range_still_applies(request: &HeaderMap, etag: &str) -> bool {
    request
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| !etag.starts_with("W/") && v.trim() == etag)
}

/// A public file (a podcast feed's enclosure or artwork) for a `GET`: when the store
/// makes presigned URLs (S3), `307` to one, and the bytes come from the store itself
/// (it answers ranges and `ETag`s the same way; the object carries its `Content-Type`,
/// set by extension when it was written). Otherwise, and for `HEAD` (a URL is signed
/// for one method), as [`serve_object`]. The pages' own files always come through the
/// node: their Content-Security-Policy admits media from their origin only.
pub async fn serve_public_object(
    store: &dyn Objects,
    key: &str,
    name: &str,
    method: &axum::http::Method,
    request: &HeaderMap,
) -> Result<Response, ApiError> {
    if method == axum::http::Method::GET {
        if store
            .head(key)
            .await
            .map_err(|e| storage_unavailable(key, &e))?
            .is_none()
        {
            warn!(key, "a file the database names is not in the store");
            return Err(ApiError::not_found("the file is not in the store"));
        }
        if let Some(url) = store
            .presigned_get(key)
            .await
            .map_err(|e| storage_unavailable(key, &e))?
        {
            let location = HeaderValue::from_str(&url).map_err(|_| {
                warn!(key, "the store made a URL that is not a header value");
                ApiError::internal("the file could not be served")
            })?;
            let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
            r.headers_mut().insert(header::LOCATION, location);
            // The URL expires: nobody may keep it.
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return Ok(r);
        }
    }
    serve_object(store, key, name, request).await
}

/// The stored object `key` (a file called `name`): `200` with all of it (streamed),
/// `206` with the asked range, `304` when the client has this version, or `416`.
pub async fn serve_object(
    store: &dyn Objects,
    key: &str,
    name: &str,
    request: &HeaderMap,
) -> Result<Response, ApiError> {
    let Some((len, version)) = store
        .head(key)
        .await
        .map_err(|e| storage_unavailable(key, &e))?
    else {
        warn!(key, "a file the database names is not in the store");
        return Err(ApiError::not_found("the file is not in the store"));
    };
    let etag = entity_tag(&version);
    let etag_header = HeaderValue::from_str(&etag).expect("printable ASCII"); // filtered above
    if none_match(request, &etag) {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        r.headers_mut().insert(header::ETAG, etag_header);
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, max-age=3600"),
        );
        return Ok(r);
    }
    let ranged = if range_still_applies(request, &etag) {
        match asked(request, len) {
            Asked::Whole => None,
            Asked::Range(start, end) => Some((start, end, len)),
            Asked::Unsatisfiable => {
                let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
                r.headers_mut().insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{len}")).expect("digits and ASCII"), // a formatted number
                );
                return Ok(r);
            }
        }
    } else {
        None
    };
    let mut resp = match ranged {
        Some((start, end, len)) => {
            let body = store
                .get_range(key, start..end + 1)
                .await
                .map_err(|e| storage_unavailable(key, &e))?;
            let mut r = (StatusCode::PARTIAL_CONTENT, body).into_response();
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {start}-{end}/{len}"))
                    .expect("digits and ASCII"), // formatted numbers
            );
            r
        }
        None => {
            let (len, stream) = store
                .get_stream(key)
                .await
                .map_err(|e| storage_unavailable(key, &e))?;
            let mut r = (StatusCode::OK, Body::from_stream(stream)).into_response();
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            r
        }
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(name)),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, etag_header);
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranged(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        let h = HeaderMap::new();
        assert_eq!(asked(&h, 10), Asked::Whole);
        assert_eq!(asked(&ranged("bytes=0-3"), 10), Asked::Range(0, 3));
        assert_eq!(asked(&ranged("bytes=4-"), 10), Asked::Range(4, 9));
        assert_eq!(asked(&ranged("bytes=-3"), 10), Asked::Range(7, 9));
        assert_eq!(asked(&ranged("bytes=5-100"), 10), Asked::Range(5, 9));
        assert_eq!(asked(&ranged("bytes=10-"), 10), Asked::Unsatisfiable);
        assert_eq!(asked(&ranged("bytes=0-1,4-5"), 10), Asked::Whole);
        assert_eq!(asked(&ranged("bytes=7-3"), 10), Asked::Whole);
        assert_eq!(asked(&ranged("items=0-3"), 10), Asked::Whole);
    }

    #[test]
    fn entity_tags_are_compared_as_rfc_9110_says() {
        assert_eq!(entity_tag("\"abc\""), "\"abc\"");
        assert_eq!(entity_tag("1f-5a\u{7}\" x"), "\"1f-5ax\"");
        assert_eq!(entity_tag("W/\"abc\""), "W/\"abc\"");
        assert_eq!(entity_tag(""), "\"unversioned\"");
        let with = |name, v: &str| {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_str(v).unwrap());
            h
        };
        assert!(none_match(
            &with(header::IF_NONE_MATCH, "\"a\", \"b\""),
            "\"b\""
        ));
        assert!(none_match(&with(header::IF_NONE_MATCH, "W/\"b\""), "\"b\""));
        assert!(none_match(&with(header::IF_NONE_MATCH, "*"), "\"b\""));
        assert!(!none_match(&with(header::IF_NONE_MATCH, "\"a\""), "\"b\""));
        assert!(!none_match(&HeaderMap::new(), "\"b\""));
        assert!(range_still_applies(&HeaderMap::new(), "\"b\""));
        assert!(range_still_applies(
            &with(header::IF_RANGE, "\"b\""),
            "\"b\""
        ));
        assert!(!range_still_applies(
            &with(header::IF_RANGE, "\"a\""),
            "\"b\""
        ));
        let weak = "W/\"b\"";
        assert!(!range_still_applies(&with(header::IF_RANGE, weak), weak));
        assert!(none_match(&with(header::IF_NONE_MATCH, "\"b\""), weak));
    }

    #[test]
    fn a_range_is_at_most_max_range_long() {
        let big = 100 * MAX_RANGE;
        assert_eq!(
            asked(&ranged("bytes=0-"), big),
            Asked::Range(0, MAX_RANGE - 1)
        );
        assert_eq!(
            asked(&ranged("bytes=5-"), big),
            Asked::Range(5, 5 + MAX_RANGE - 1)
        );
    }
}
