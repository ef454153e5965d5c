//! A browser page's refresh token, kept in an HttpOnly cookie.
//!
//! A page's scripts never see the refresh token: login, registration and pairing
//! asked with `"cookie": true` put it in a cookie (`HttpOnly`, `SameSite=Strict`,
//! path `/api/v1/auth`, `Secure` on HTTPS nodes) and leave it out of the JSON; refresh
//! and logout asked with `"cookie": "user"` or `"device"` read it from there. A user
//! login and a device pairing in the same browser (a phone that is also signed in)
//! keep one cookie each.
//!
//! `SameSite=Strict` keeps the cookie off requests other sites start, and nothing a
//! cookie-authenticated request returns is readable cross-origin (the API sends no
//! credentialed CORS headers), so the cookie cannot be spent by another origin.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use serde::Deserialize;
use utoipa::ToSchema;

/// Whose refresh token a cookie holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CookieKind {
    /// A user's login.
    User,
    /// A paired device (the phone page).
    Device,
}

/// Where the cookie is sent: only to the endpoints that read it.
const PATH: &str = "/api/v1/auth";

impl CookieKind {
    pub fn name(self) -> &'static str {
        match self {
            CookieKind::User => "sc_refresh_user",
            CookieKind::Device => "sc_refresh_device",
        }
    }
}

/// The cookie's value in a request, if it carries one.
pub fn read(headers: &HeaderMap, kind: CookieKind) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == kind.name())
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// `Set-Cookie` for a new refresh token.
pub fn set(kind: CookieKind, token: &str, lifetime: Duration, secure: bool) -> HeaderValue {
    header_value(kind, token, lifetime.as_secs(), secure)
}

/// `Set-Cookie` that removes the cookie.
pub fn clear(kind: CookieKind, secure: bool) -> HeaderValue {
    header_value(kind, "", 0, secure)
}

fn header_value(kind: CookieKind, token: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{}={token}; Path={PATH}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}",
        kind.name()
    ))
    .expect("refresh tokens are URL-safe base64") // auth::new_secret makes them
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_name_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static(
                "theme=dark; sc_refresh_device=dev123; sc_refresh_user=usr456",
            ),
        );
        assert_eq!(read(&h, CookieKind::User).as_deref(), Some("usr456"));
        assert_eq!(read(&h, CookieKind::Device).as_deref(), Some("dev123"));
        h.insert(header::COOKIE, HeaderValue::from_static("sc_refresh_user="));
        assert_eq!(read(&h, CookieKind::User), None);
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_scoped_to_auth() {
        let v = set(CookieKind::User, "abc", Duration::from_secs(60), true);
        let v = v.to_str().unwrap();
        for part in [
            "sc_refresh_user=abc",
            "Path=/api/v1/auth",
            "Max-Age=60",
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
        ] {
            assert!(v.contains(part), "{v} lacks {part}");
        }
        let c = clear(CookieKind::Device, false);
        assert!(c.to_str().unwrap().starts_with("sc_refresh_device=; "));
        assert!(!c.to_str().unwrap().contains("Secure"));
    }
}
