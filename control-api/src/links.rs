//! Short-lived signed links to files: what a page hands to `<audio src>`, `<img src>`
//! or a download link, which cannot carry an `Authorization` header.
//!
//! A link is the file's API path plus `?exp=<unix seconds>&sig=<base64url>`, where
//! `sig` is HMAC-SHA256 over `path` and `exp` with a key kept in the keys directory
//! (so every node sharing the keys honours every node's links). A link opens exactly
//! the file it names, until it expires; it is made only for someone who may read
//! the file.

use std::io;
use std::path::Path;
use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

/// How long a link works.
pub const LINK_TTL: Duration = Duration::from_secs(6 * 3600);

/// The key links are signed with.
pub struct FileLinks {
    key: hmac::Key,
}

impl std::fmt::Debug for FileLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileLinks")
    }
}

/// The query a link carries.
#[derive(Debug, Deserialize)]
pub struct LinkQuery {
    pub exp: Option<i64>,
    pub sig: Option<String>,
}

impl FileLinks {
    /// The key in `path`, made (32 random bytes, mode 0600) when missing.
    pub fn load_or_create(path: &Path) -> io::Result<FileLinks> {
        let bytes = crate::keyfile::load_or_create(path)?;
        Ok(FileLinks {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
        })
    }

    fn tag(&self, path: &str, exp: i64) -> hmac::Tag {
        hmac::sign(&self.key, format!("{path}\n{exp}").as_bytes())
    }

    /// A link to `path` (an absolute path under the API) that works until `now + ttl`.
    pub fn sign(&self, path: &str, now_secs: i64, ttl: Duration) -> String {
        let exp = now_secs + ttl.as_secs() as i64;
        let sig = URL_SAFE_NO_PAD.encode(self.tag(path, exp).as_ref());
        format!("{path}?exp={exp}&sig={sig}")
    }

    /// Whether `q` is a valid, unexpired link to `path`.
    pub fn verify(&self, path: &str, q: &LinkQuery, now_secs: i64) -> bool {
        let (Some(exp), Some(sig)) = (q.exp, q.sig.as_deref()) else {
            return false;
        };
        if exp < now_secs {
            return false;
        }
        let Ok(sig) = URL_SAFE_NO_PAD.decode(sig) else {
            return false;
        };
        hmac::verify(&self.key, format!("{path}\n{exp}").as_bytes(), &sig).is_ok()
    }
}

/// Whether a request is a valid link: its path (as the client sent it, before any
/// nesting) signed with its `exp`.
pub fn request_is_linked(links: &FileLinks, parts: &axum::http::request::Parts) -> bool {
    let uri = parts
        .extensions
        .get::<axum::extract::OriginalUri>()
        .map_or(&parts.uri, |o| &o.0);
    let Ok(axum::extract::Query(q)) = axum::extract::Query::<LinkQuery>::try_from_uri(uri) else {
        return false;
    };
    links.verify(uri.path(), &q, crate::auth::now_millis() / 1000)
}

/// A file route's caller: whoever its usual extractor `C` accepts (a bearer token), or
/// a signed link to this very file. Only the routes that serve files take it.
#[derive(Debug)]
pub enum FileAccess<C> {
    Caller(C),
    Link,
}

impl<C> axum::extract::FromRequestParts<crate::state::AppState> for FileAccess<C>
where
    C: axum::extract::FromRequestParts<crate::state::AppState, Rejection = signaling::ApiError>
        + Send,
{
    type Rejection = signaling::ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        st: &crate::state::AppState,
    ) -> Result<Self, signaling::ApiError> {
        if crate::state::bearer(parts).is_none() && request_is_linked(&st.links, parts) {
            return Ok(FileAccess::Link);
        }
        C::from_request_parts(parts, st)
            .await
            .map(FileAccess::Caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links() -> FileLinks {
        let p = std::env::temp_dir().join(format!("sc-links-{}", rand::random::<u64>()));
        let l = FileLinks::load_or_create(&p).unwrap();
        let again = FileLinks::load_or_create(&p).unwrap();
        // The same key after a restart.
        let url = l.sign("/a", 100, Duration::from_secs(10));
        let q = query(&url);
        assert!(again.verify("/a", &q, 100));
        let _ = std::fs::remove_file(p);
        l
    }

    fn query(url: &str) -> LinkQuery {
        let uri: axum::http::Uri = url.parse().unwrap();
        axum::extract::Query::<LinkQuery>::try_from_uri(&uri)
            .unwrap()
            .0
    }

    #[test]
    fn a_link_opens_its_file_until_it_expires() {
        let l = links();
        let path = "/api/v1/uploads/u1/files/audio.opus";
        let url = l.sign(path, 1_000, Duration::from_secs(60));
        assert!(url.starts_with(path));
        let q = query(&url);
        assert!(l.verify(path, &q, 1_000));
        assert!(l.verify(path, &q, 1_060));
        assert!(!l.verify(path, &q, 1_061), "expired");
        assert!(
            !l.verify("/api/v1/uploads/u2/files/audio.opus", &q, 1_000),
            "another file"
        );
        let later = LinkQuery {
            exp: q.exp.map(|e| e + 3600),
            sig: q.sig.clone(),
        };
        assert!(!l.verify(path, &later, 1_000), "a changed expiry");
        assert!(!l.verify(
            path,
            &LinkQuery {
                exp: q.exp,
                sig: None
            },
            1_000
        ));
        assert!(!l.verify(
            path,
            &LinkQuery {
                exp: q.exp,
                sig: Some("!!".into())
            },
            1_000
        ));
    }
}
