//! Stored files as HTTP answers: the type from the name, and single byte ranges
//! (`Range: bytes=…`), which media elements use to seek and to read a file's end.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

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
        _ => "application/octet-stream",
    }
}

/// The requested byte range of a `len`-byte file: `Ok(None)` for the whole file,
/// `Err(())` when it cannot be satisfied. One range only (`bytes=a-b`, `a-`, `-n`);
/// anything else is answered with the whole file, as RFC 9110 allows.
fn range(headers: &HeaderMap, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(s), Ok(e)) if s <= e => (s, e.min(len.saturating_sub(1))),
        (Ok(s), Err(_)) if b.is_empty() => (s, len.saturating_sub(1)),
        (Err(_), Ok(n)) if a.is_empty() && n > 0 => (len.saturating_sub(n), len.saturating_sub(1)),
        _ => return Ok(None),
    };
    if len == 0 || start >= len {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// A stored file's answer: `200` with all of it, `206` with the asked range, or `416`.
pub fn file_response(bytes: Vec<u8>, name: &str, request: &HeaderMap) -> Response {
    let len = bytes.len() as u64;
    let mut resp = match range(request, len) {
        Ok(None) => (StatusCode::OK, bytes).into_response(),
        Ok(Some((start, end))) => {
            let body = bytes[start as usize..=end as usize].to_vec();
            let mut r = (StatusCode::PARTIAL_CONTENT, body).into_response();
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {start}-{end}/{len}"))
                    .expect("digits and ASCII"), // formatted numbers
            );
            r
        }
        Err(()) => {
            let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}")).expect("digits and ASCII"), // formatted number
            );
            return r;
        }
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(name)),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    resp
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
        assert_eq!(range(&h, 10), Ok(None));
        assert_eq!(range(&ranged("bytes=0-3"), 10), Ok(Some((0, 3))));
        assert_eq!(range(&ranged("bytes=4-"), 10), Ok(Some((4, 9))));
        assert_eq!(range(&ranged("bytes=-3"), 10), Ok(Some((7, 9))));
        assert_eq!(range(&ranged("bytes=5-100"), 10), Ok(Some((5, 9))));
        assert_eq!(range(&ranged("bytes=10-"), 10), Err(()));
        assert_eq!(range(&ranged("bytes=0-1,4-5"), 10), Ok(None));
        assert_eq!(range(&ranged("bytes=7-3"), 10), Ok(None));
        assert_eq!(range(&ranged("items=0-3"), 10), Ok(None));
    }

    #[test]
    fn a_range_answer_is_partial_content() {
        let r = file_response((0u8..10).collect(), "a.opus", &ranged("bytes=2-4"));
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes 2-4/10");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "audio/ogg");
        assert_eq!(r.headers()[header::ACCEPT_RANGES], "bytes");
        let r = file_response(vec![1; 4], "x.webm", &ranged("bytes=9-"));
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes */4");
    }
}
