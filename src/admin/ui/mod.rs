//! UI: the web UI's static files — hand-written HTML, CSS and ES modules
//! under `src/ui/` — embedded in the binary and served by the admin
//! listener at `/` (the app shell) and `/ui/{file}`.
//!
//! Owns the path → asset map, content types, validators (an `ETag` that is
//! a hash of the file, computed at compile time; `If-None-Match` → 304) and
//! the security headers (a strict Content-Security-Policy: `'self'` only,
//! no inline script or style). Must never serve data — everything dynamic
//! comes from `/api/…`, which checks the admin token — nor anything that is
//! not compiled in (no file system, no CDN), so it works air-gapped.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;

/// The policy sent with every UI response: only this origin, no inline
/// script or style attributes, no plugins, no framing.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; \
base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
pub struct Asset {
    /// Its URL path.
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
    /// FNV-1a 64 of `body` (the `ETag`).
    pub hash: u64,
}

/// FNV-1a, 64 bit: a content hash for `ETag`s, evaluated at compile time.
pub const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

macro_rules! asset {
    ($path:literal, $file:literal, $ctype:expr) => {
        Asset {
            path: $path,
            content_type: $ctype,
            body: include_bytes!($file),
            hash: fnv1a(include_bytes!($file)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the UI.
pub static ASSETS: &[Asset] = &[
    asset!("/", "index.html", "text/html; charset=utf-8"),
    asset!("/ui/style.css", "style.css", "text/css; charset=utf-8"),
    asset!("/ui/icon.svg", "icon.svg", "image/svg+xml"),
    asset!("/ui/app.js", "app.js", JS),
    asset!("/ui/api.js", "api.js", JS),
    asset!("/ui/dom.js", "dom.js", JS),
    asset!("/ui/traces.js", "traces.js", JS),
    asset!("/ui/trace.js", "trace.js", JS),
    asset!("/ui/span.js", "span.js", JS),
    asset!("/ui/chat.js", "chat.js", JS),
    asset!("/ui/dashboard.js", "dashboard.js", JS),
];

/// Whether `path` belongs to the UI (so the admin listener sends it here).
pub fn is_ui_path(path: &str) -> bool {
    path == "/" || path == "/index.html" || path == "/ui" || path.starts_with("/ui/")
}

/// The asset at `path` (`/index.html` is the shell too).
pub fn find(path: &str) -> Option<&'static Asset> {
    let path = if path == "/index.html" { "/" } else { path };
    ASSETS.iter().find(|a| a.path == path)
}

/// Answers a UI request: the asset (200, or 304 when `If-None-Match`
/// names its `ETag`), 404 for an unknown file, 405 for a method other than
/// GET or HEAD. Every answer carries the security headers.
pub fn serve(method: &Method, path: &str, headers: &HeaderMap) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let Some(asset) = find(path) else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let etag = format!("\"{:016x}\"", asset.hash);
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == etag
        });
    let mut resp = if fresh {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        Response::new(Full::new(Bytes::from_static(asset.body)))
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    // Revalidate every time (a 304 is cheap): the URLs carry no hash, and
    // a new binary must never run against old modules.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    security_headers(h);
    resp
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    security_headers(h);
    resp
}

fn security_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_shell_and_modules_import_is_embedded() {
        // Every `/ui/…` URL named in an asset (script src, import
        // specifier, stylesheet, icon) must be one we serve.
        for a in ASSETS {
            let text = std::str::from_utf8(a.body).unwrap();
            for piece in text
                .split(['"', '\''])
                .filter(|p| p.starts_with("/ui/") || (p.starts_with("./") && p.ends_with(".js")))
            {
                let path = match piece.strip_prefix("./") {
                    Some(rest) => format!("/ui/{rest}"),
                    None => piece.to_string(),
                };
                assert!(find(&path).is_some(), "{} refers to {path}", a.path);
            }
        }
    }

    #[test]
    fn no_inline_script_or_html_injection_sinks() {
        for a in ASSETS {
            let text = std::str::from_utf8(a.body).unwrap();
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(!text.contains(sink), "{} uses {sink}", a.path);
            }
        }
        let shell = std::str::from_utf8(find("/").unwrap().body).unwrap();
        assert!(!shell.contains("<script>"), "inline script in the shell");
        assert!(!shell.contains("style="), "inline style in the shell");
    }

    #[test]
    fn etag_is_the_content_hash_and_304s() {
        let a = find("/ui/app.js").unwrap();
        let r = serve(&Method::GET, "/ui/app.js", &HeaderMap::new());
        assert_eq!(r.status(), StatusCode::OK);
        let etag = r.headers()[header::ETAG].clone();
        assert_eq!(etag.to_str().unwrap(), format!("\"{:016x}\"", a.hash));
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(
            serve(&Method::GET, "/ui/app.js", &h).status(),
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
