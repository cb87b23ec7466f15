//! Prefetch what a page links, and hint it to the next visitor.
//!
//! - An HTML response (`Content-Type: text/html`, status 200) that a shared
//!   cache may keep (no `Authorization` on the request, no `private` or
//!   `no-store`, no `Set-Cookie`): the module asks for its body (up to
//!   `page_bytes`), finds the same-site stylesheets, scripts and images it
//!   links (`html`), and prefetches the first `assets` of them.
//! - A long-lived instance also keeps, per page, up to `hints` of those
//!   that may be hinted (stylesheets, classic scripts, what the page itself
//!   preloads), and on the next request for that page adds them as 103
//!   Early Hints (`</css/app.css>; rel=preload; as=style`), which the
//!   client gets while the origin is asked (on a miss or revalidation).
//!
//! Per request it only prefetches: with no instance state there is nothing
//! to hint, and `on_request` returns having read nothing, a decision the
//! host reuses without calling the module.

use std::cell::RefCell;

use stavka_policy::prefetch::{self, early_hint, fetch_all, want_body};
use stavka_policy::{
    export_policy, init_number, HookSet, Policy, Request, RequestOutcome, Response, ResponseOutcome,
};

mod html;
mod pages;

use pages::{Pages, MAX_HINT_TARGET};

struct PageAssets;

/// The `[init]` settings.
#[derive(Debug, Clone, Copy)]
struct Settings {
    /// Subresources prefetched per page (`assets`).
    assets: usize,
    /// Early Hints links per page (`hints`; 0: none).
    hints: usize,
    /// Pages an instance keeps hints for (`pages`; 0: none).
    pages: usize,
    /// The largest page read (`page_bytes`).
    page_bytes: u32,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            assets: 16,
            hints: 8,
            pages: 256,
            page_bytes: 256 * 1024,
        }
    }
}

impl Settings {
    fn from_init(config: &[(String, String)]) -> Result<Settings, String> {
        let mut settings = Settings::default();
        for (key, value) in config {
            match key.as_str() {
                "assets" => settings.assets = init_number(key, value, 1..=64)?,
                "hints" => settings.hints = init_number(key, value, 0..=prefetch::MAX_EARLY_HINTS)?,
                "pages" => settings.pages = init_number(key, value, 0..=4096)?,
                "page_bytes" => {
                    settings.page_bytes = init_number(key, value, 1024..=prefetch::MAX_BODY_BYTES)?
                }
                other => return Err(format!("unknown init key {other:?}")),
            }
        }
        Ok(settings)
    }
}

thread_local! {
    static SETTINGS: RefCell<Settings> = RefCell::new(Settings::default());
    static PAGES: RefCell<Pages> = RefCell::new(Pages::default());
}

impl Policy for PageAssets {
    const HOOKS: HookSet = HookSet::ON_REQUEST
        .union(HookSet::ON_RESPONSE)
        .union(HookSet::INIT);

    fn init(config: &[(String, String)]) -> Result<(), String> {
        let settings = Settings::from_init(config)?;
        SETTINGS.set(settings);
        Ok(())
    }

    fn on_request(req: &Request) -> RequestOutcome {
        PAGES.with_borrow_mut(|pages| {
            if pages.is_empty() {
                return;
            }
            if let Some(links) = pages.links(req.host(), req.path()) {
                for link in links {
                    if !early_hint(link) {
                        break;
                    }
                }
            }
        });
        RequestOutcome::lookup()
    }

    fn on_response(req: &Request, resp: &Response) -> ResponseOutcome {
        if resp.status == 200 && is_html(resp) && is_shared(req, resp) {
            want_body(SETTINGS.with_borrow(|s| s.page_bytes));
        }
        ResponseOutcome::default()
    }

    fn on_body(req: &Request, _resp: &Response, body: &[u8]) {
        let settings = SETTINGS.with_borrow(|s| *s);
        let (host, path) = (req.host(), req.path());
        let assets = html::assets(body, path, host, settings.assets);
        fetch_all(assets.iter().map(|a| &a.target));
        if settings.pages == 0 || settings.hints == 0 {
            return;
        }
        let links: Vec<String> = assets
            .iter()
            .filter(|a| a.hint && a.target.len() <= MAX_HINT_TARGET)
            .take(settings.hints)
            .map(|a| format!("<{}>; rel=preload; as={}", a.target, a.kind.as_str()))
            .collect();
        PAGES.with_borrow_mut(|pages| pages.learn(host, path, links, settings.pages));
    }
}

export_policy!(PageAssets);

/// Whether the response is an HTML page.
fn is_html(resp: &Response) -> bool {
    resp.header("content-type").is_some_and(|value| {
        let media_type = value.split(';').next().unwrap_or_default().trim();
        media_type.eq_ignore_ascii_case("text/html")
    })
}

/// Whether the page is the same for every client, as far as the exchange
/// says: what is learnt from it is hinted to everyone, so a personal page
/// (RFC 9111 §3.5 `Authorization`, §5.2.2.7 `private`, §5.2.2.5
/// `no-store`, or one that sets a cookie) is not read at all.
fn is_shared(req: &Request, resp: &Response) -> bool {
    let cache_control = resp
        .header("cache-control")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let personal = cache_control
        .split(',')
        .map(|d| d.split('=').next().unwrap_or_default().trim())
        .any(|d| d == "private" || d == "no-store");
    !personal && resp.header("set-cookie").is_none() && req.header("authorization").is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use stavka_policy::testing::{self, request, response, RequestBuilder};
    use stavka_policy::Refusal;

    const PAGE: &str = r#"<!doctype html><head>
        <link rel=stylesheet href=/css/app.css><script src=app.js></script>
        <link rel=preload as=font href=/f.woff2 crossorigin></head>
        <body><img src=hero.jpg><img src=https://cdn.other/x.png></body>"#;

    fn init(pairs: &[(&str, &str)]) -> Result<(), String> {
        let config: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        PageAssets::init(&config)
    }

    fn html_response(path: &str) -> bool {
        testing::clear_prefetches();
        testing::set_response_header("content-type", "text/html; charset=utf-8");
        PageAssets::on_response(&request("GET", path), &response(200));
        testing::wanted_body().is_some()
    }

    fn hints_for(req: &Request) -> Vec<String> {
        testing::clear_prefetches();
        PageAssets::on_request(req);
        testing::early_hints()
    }

    #[test]
    fn an_html_page_is_read_and_its_assets_prefetched() {
        testing::reset();
        assert!(html_response("/shop/index.html"));
        assert_eq!(testing::wanted_body(), Some(256 * 1024));
        PageAssets::on_body(
            &request("GET", "/shop/index.html"),
            &response(200),
            PAGE.as_bytes(),
        );
        assert_eq!(
            testing::prefetched(),
            ["/css/app.css", "/shop/app.js", "/f.woff2", "/shop/hero.jpg"]
        );
    }

    #[test]
    fn only_shared_html_pages_are_read() {
        testing::reset();
        testing::set_response_header("content-type", "application/json");
        PageAssets::on_response(&request("GET", "/api"), &response(200));
        assert_eq!(testing::wanted_body(), None);
        testing::set_response_header("content-type", "text/html");
        PageAssets::on_response(&request("GET", "/missing"), &response(404));
        assert_eq!(testing::wanted_body(), None, "an error page");
        for cache_control in [
            "private, max-age=60",
            "No-Store",
            "max-age=0, private=\"x\"",
        ] {
            testing::set_response_header("cache-control", cache_control);
            assert!(!html_response("/me"), "{cache_control}");
        }
        testing::set_response_header("cache-control", "public, max-age=60");
        assert!(html_response("/"));
        testing::set_response_header("set-cookie", "s=1");
        assert!(!html_response("/"), "a page that sets a cookie");
        testing::reset();
        testing::set_response_header("content-type", "text/html");
        let signed_in = RequestBuilder::new("GET", "/")
            .header("authorization", "Bearer t")
            .build();
        PageAssets::on_response(&signed_in, &response(200));
        assert_eq!(testing::wanted_body(), None, "RFC 9111 §3.5");
    }

    #[test]
    fn the_next_request_for_the_page_gets_early_hints() {
        testing::reset();
        let page = request("GET", "/shop/");
        assert!(hints_for(&page).is_empty(), "nothing learnt yet");
        assert!(
            testing::request_reads().is_empty(),
            "and nothing read: a reusable decision"
        );
        PageAssets::on_body(&page, &response(200), PAGE.as_bytes());
        assert_eq!(
            hints_for(&request("GET", "/shop/")),
            [
                "</css/app.css>; rel=preload; as=style",
                "</shop/app.js>; rel=preload; as=script"
            ],
            "stylesheets and classic scripts; not the CORS font, not plain images"
        );
        assert!(hints_for(&request("GET", "/other")).is_empty());
        let other_site = RequestBuilder::new("GET", "/shop/").host("b.test").build();
        assert!(hints_for(&other_site).is_empty(), "sites are apart");

        PageAssets::on_body(&page, &response(200), b"<p>no assets any more</p>");
        assert!(
            hints_for(&request("GET", "/shop/")).is_empty(),
            "the last response decides"
        );
    }

    #[test]
    fn settings_bound_prefetches_hints_and_pages() {
        testing::reset();
        init(&[
            ("assets", "2"),
            ("hints", "1"),
            ("pages", "2"),
            ("page_bytes", "2048"),
        ])
        .unwrap();
        assert!(html_response("/"));
        assert_eq!(testing::wanted_body(), Some(2048));
        for p in ["/1", "/2", "/3"] {
            PageAssets::on_body(&request("GET", p), &response(200), PAGE.as_bytes());
        }
        assert_eq!(testing::prefetched().len(), 2 * 3, "two assets per page");
        assert!(
            hints_for(&request("GET", "/1")).is_empty(),
            "two pages kept: the first is gone"
        );
        assert_eq!(
            hints_for(&request("GET", "/3")),
            ["</css/app.css>; rel=preload; as=style"]
        );

        init(&[("hints", "0")]).unwrap();
        PageAssets::on_body(&request("GET", "/4"), &response(200), PAGE.as_bytes());
        assert!(hints_for(&request("GET", "/4")).is_empty());
        for bad in [
            ("assets", "0"),
            ("hints", "17"),
            ("pages", "-1"),
            ("page_bytes", "2000000"),
            ("asset", "1"),
        ] {
            assert!(init(&[bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refusals_stop_prefetching_and_hinting_early() {
        testing::reset();
        testing::answer_prefetches(|_| Err(Refusal::TooDeep));
        PageAssets::on_body(&request("GET", "/"), &response(200), PAGE.as_bytes());
        assert_eq!(testing::prefetches().len(), 1);
        testing::refuse_body_and_hints(true);
        assert!(hints_for(&request("GET", "/")).is_empty());
    }

    #[test]
    fn hostile_pages_do_no_harm() {
        testing::reset();
        let mut huge = Vec::new();
        while huge.len() < 1 << 20 {
            huge.extend_from_slice(b"<img src=\"\xff\"><link rel=stylesheet href=\"a\r\nb.css\">");
        }
        huge.extend_from_slice(b"<link rel=stylesheet href=\"/late.css\">");
        PageAssets::on_body(&request("GET", "/"), &response(200), &huge);
        assert_eq!(testing::prefetched(), ["/late.css"]);
        let long = format!(
            "<link rel=stylesheet href=/{}.css>",
            "x".repeat(MAX_HINT_TARGET)
        );
        PageAssets::on_body(&request("GET", "/long"), &response(200), long.as_bytes());
        assert_eq!(testing::prefetched().len(), 2, "prefetched");
        assert!(
            hints_for(&request("GET", "/long")).is_empty(),
            "but too long to hint"
        );
        let binary: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
        PageAssets::on_body(&request("GET", "/bin"), &response(200), &binary);
        for hint in hints_for(&request("GET", "/")) {
            assert!(!hint.contains(['\r', '\n', '"']), "{hint:?}");
        }
    }
}
