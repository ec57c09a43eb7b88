//! The web UI's static side over a real admin listener: every embedded
//! asset with its content type, ETag and the strict CSP; the shell and
//! assets open without the admin token while `/api/*` still needs it;
//! nothing refers to another origin. (The pages themselves are tested in
//! a real browser: `scripts/ui_test.sh`.)

mod common;
mod mock;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};

const TOKEN: &str = "ui-t0k3n";

async fn get(c: &HttpClient, h: &Harness, path: &str, headers: &[(&str, &str)]) -> Got {
    let url = format!("http://{}{}", h.admin, path);
    send(c, request(Method::GET, &url, headers, Bytes::new())).await
}

fn header<'a>(got: &'a Got, name: &str) -> &'a str {
    got.headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn assets_have_their_types_etags_and_a_strict_csp() {
    let h = Harness::start().await;
    let c = client();
    for asset in llmtap::admin::ui::ASSETS {
        let got = get(&c, &h, asset.path, &[]).await;
        assert_eq!(got.status, StatusCode::OK, "{}", asset.path);
        assert_eq!(&got.body[..], asset.body, "{}", asset.path);
        let ctype = header(&got, "content-type");
        let want = match asset.path.rsplit('.').next() {
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("svg") => "image/svg+xml",
            _ => "text/html; charset=utf-8",
        };
        assert_eq!(ctype, want, "{}", asset.path);
        let csp = header(&got, "content-security-policy");
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(header(&got, "x-content-type-options"), "nosniff");
        assert_eq!(header(&got, "cache-control"), "no-cache");
        let etag = header(&got, "etag").to_string();
        assert_eq!(
            etag,
            format!("\"{:016x}\"", llmtap::admin::ui::fnv1a(asset.body))
        );
        // Revalidation: the same ETag gives 304 and no body.
        let again = get(&c, &h, asset.path, &[("if-none-match", &etag)]).await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{}", asset.path);
        assert!(again.body.is_empty());
        let stale = get(&c, &h, asset.path, &[("if-none-match", "\"0\"")]).await;
        assert_eq!(stale.status, StatusCode::OK);
    }
    // The shell loads its module from /ui/, with no inline script.
    let shell = get(&c, &h, "/", &[]).await;
    let text = std::str::from_utf8(&shell.body).unwrap();
    assert!(text.contains(r#"<script type="module" src="/ui/app.js"></script>"#));
    assert_eq!(text.matches("<script").count(), 1);
    assert_eq!(get(&c, &h, "/index.html", &[]).await.body, shell.body);
    // Unknown files and other methods.
    let missing = get(&c, &h, "/ui/nope.js", &[]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(header(&missing, "content-security-policy").contains("default-src 'self'"));
    let url = format!("http://{}/", h.admin);
    let post = send(&c, request(Method::POST, &url, &[], Bytes::new())).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&post, "allow"), "GET, HEAD");
}

#[tokio::test]
async fn the_ui_opens_without_the_token_but_the_api_does_not() {
    let h = Harness::start_with(|c| c.admin_token = TOKEN.into()).await;
    let c = client();
    for path in ["/", "/ui/app.js", "/ui/style.css"] {
        assert_eq!(
            get(&c, &h, path, &[]).await.status,
            StatusCode::OK,
            "{path}"
        );
    }
    let bearer = format!("Bearer {TOKEN}");
    for path in [
        "/api/traces",
        "/api/live",
        "/api/stats",
        "/api/export?format=json",
    ] {
        let got = get(&c, &h, path, &[]).await;
        assert_eq!(got.status, StatusCode::UNAUTHORIZED, "{path}");
        let got = get(&c, &h, path, &[("authorization", "Bearer wrong")]).await;
        assert_eq!(got.status, StatusCode::UNAUTHORIZED, "{path}");
        let got = get(&c, &h, path, &[("authorization", &bearer)]).await;
        assert_eq!(got.status, StatusCode::OK, "{path}");
    }
    // The UI sends exactly this header, from the token the user pasted.
    let app = get(&c, &h, "/ui/api.js", &[]).await;
    assert!(std::str::from_utf8(&app.body)
        .unwrap()
        .contains("Authorization: `Bearer ${t}`"));
}

#[test]
fn no_asset_refers_to_another_origin() {
    for asset in llmtap::admin::ui::ASSETS {
        let text = std::str::from_utf8(asset.body).unwrap();
        for scheme in ["http://", "https://", "//fonts", "//cdn"] {
            for (i, _) in text.match_indices(scheme) {
                // The one URL allowed is the SVG namespace (a name, not a fetch).
                assert!(
                    text[i..].starts_with("http://www.w3.org/2000/svg"),
                    "{} refers to {}",
                    asset.path,
                    &text[i..(i + 40).min(text.len())]
                );
            }
        }
    }
}
