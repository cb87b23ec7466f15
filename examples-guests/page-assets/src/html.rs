//! The subresources an HTML page links, found by a small scanner that
//! follows the HTML tokeniser (WHATWG HTML §13.2.5) only as far as this
//! needs: tags, their attributes, comments, and the raw text of
//! `<script>`, `<style>` and friends, where a `<img` is not a tag. It
//! reads bytes, so a page in any ASCII-compatible encoding works, and every
//! loop moves forward through the body: linear time, nothing unbounded.

use stavka_policy::prefetch::same_site_target;

/// What a subresource is, for the `as` of a preload hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A stylesheet.
    Style,
    /// A classic script.
    Script,
    /// An image.
    Image,
    /// Anything else a `<link rel=preload>` names (a font, a module).
    Other,
}

impl Kind {
    /// The `as` value of a preload (`style`), for hints and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Style => "style",
            Kind::Script => "script",
            Kind::Image => "image",
            Kind::Other => "other",
        }
    }
}

/// One subresource the page links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    /// Its target on this site.
    pub target: String,
    /// What it is.
    pub kind: Kind,
    /// Whether a 103 may name it: a stylesheet or classic script, or what
    /// the page itself preloads as a style, script or image, fetched
    /// without CORS (a hint without `crossorigin` for a CORS fetch would
    /// make the browser download it twice).
    pub hint: bool,
}

/// Elements whose content is text, not markup: skipped to their end tag.
const RAW_TEXT: &[&[u8]] = &[
    b"script",
    b"style",
    b"textarea",
    b"title",
    b"xmp",
    b"noscript",
];

/// The same-site subresources `body`, the page at `page_path` on `host`,
/// links, in document order, without repeats, at most `max`:
/// `<link rel=stylesheet href>` (not alternate ones), `<link rel=preload
/// href>`, `<script src>` (of a JavaScript type), `<img src>` (not
/// `loading=lazy`). Relative URLs resolve against the page, or its first
/// `<base href>`; other hosts, `data:` and `javascript:` are left out.
pub fn assets(body: &[u8], page_path: &str, host: &str, max: usize) -> Vec<Asset> {
    let mut found: Vec<Asset> = Vec::new();
    let mut base = Base::Path(page_path.to_owned());
    let mut base_seen = false;
    let mut i = 0;
    while found.len() < max {
        let Some(lt) = body[i..].iter().position(|&b| b == b'<') else {
            break;
        };
        i += lt + 1;
        if body[i..].starts_with(b"!--") {
            i = find(body, i + 3, b"-->").map_or(body.len(), |end| end + 3);
            continue;
        }
        let name_len = body[i..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric())
            .count();
        if name_len == 0 {
            // An end tag, a doctype, or a `<` in text.
            continue;
        }
        let name = body[i..i + name_len].to_ascii_lowercase();
        let (tag, end) = Tag::read(body, i + name_len);
        i = end;
        if name == b"base" && !base_seen {
            if let Some(href) = tag.href.as_deref() {
                base_seen = true;
                base = match same_site_target(page_path, host, href) {
                    Some(target) => Base::Path(target.split('?').next().unwrap_or("/").to_owned()),
                    None => Base::Elsewhere,
                };
            }
        }
        if let Some((reference, kind, hint)) = tag.asset(&name) {
            if let Some(target) = base.resolve(host, reference) {
                if !found.iter().any(|a| a.target == target) {
                    found.push(Asset { target, kind, hint });
                }
            }
        }
        if let Some(raw) = RAW_TEXT.iter().find(|raw| **raw == name.as_slice()) {
            let mut close = b"</".to_vec();
            close.extend_from_slice(raw);
            i = find(body, i, &close).unwrap_or(body.len());
        }
    }
    found
}

/// What relative URLs resolve against.
enum Base {
    /// A path on this site.
    Path(String),
    /// Another site: only absolute URLs naming this one count.
    Elsewhere,
}

impl Base {
    fn resolve(&self, host: &str, reference: &str) -> Option<String> {
        match self {
            Base::Path(path) => same_site_target(path, host, reference),
            Base::Elsewhere => {
                let r = reference.trim_start().as_bytes();
                let starts = |prefix: &[u8]| {
                    r.get(..prefix.len())
                        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
                };
                let absolute = starts(b"http://") || starts(b"https://") || starts(b"//");
                absolute
                    .then(|| same_site_target("/", host, reference))
                    .flatten()
            }
        }
    }
}

/// The attributes of a start tag that matter here; the first of a name
/// wins, as in HTML.
#[derive(Debug, Default)]
struct Tag {
    rel: Option<String>,
    href: Option<String>,
    src: Option<String>,
    as_: Option<String>,
    kind: Option<String>,
    loading: Option<String>,
    crossorigin: bool,
}

impl Tag {
    /// Read attributes from `i` (just after the tag name) to the end of the
    /// tag: the tag and the index after its `>` (or the body's end).
    fn read(body: &[u8], mut i: usize) -> (Tag, usize) {
        let mut tag = Tag::default();
        loop {
            while i < body.len() && (body[i].is_ascii_whitespace() || body[i] == b'/') {
                i += 1;
            }
            if i >= body.len() {
                return (tag, body.len());
            }
            if body[i] == b'>' {
                return (tag, i + 1);
            }
            // The name: at least one byte, so the loop always moves on.
            let start = i;
            i += 1;
            while i < body.len()
                && !matches!(body[i], b'=' | b'>' | b'/')
                && !body[i].is_ascii_whitespace()
            {
                i += 1;
            }
            let name = body[start..i].to_ascii_lowercase();
            while i < body.len() && body[i].is_ascii_whitespace() {
                i += 1;
            }
            let mut value: &[u8] = b"";
            if body.get(i) == Some(&b'=') {
                i += 1;
                while i < body.len() && body[i].is_ascii_whitespace() {
                    i += 1;
                }
                let (v, next) = attribute_value(body, i);
                value = v;
                i = next;
            }
            tag.set(&name, value);
        }
    }

    fn set(&mut self, name: &[u8], value: &[u8]) {
        let slot = match name {
            b"rel" => &mut self.rel,
            b"href" => &mut self.href,
            b"src" => &mut self.src,
            b"as" => &mut self.as_,
            b"type" => &mut self.kind,
            b"loading" => &mut self.loading,
            b"crossorigin" => {
                self.crossorigin = true;
                return;
            }
            _ => return,
        };
        if slot.is_none() {
            // A value that is not UTF-8 names no URL this module fetches.
            *slot = std::str::from_utf8(value)
                .ok()
                .map(|v| v.replace("&amp;", "&"));
        }
    }

    /// The URL, kind and hint permission of the asset this tag links, if
    /// it links one.
    fn asset(&self, name: &[u8]) -> Option<(&str, Kind, bool)> {
        let lower =
            |v: &Option<String>| v.as_deref().unwrap_or_default().trim().to_ascii_lowercase();
        match name {
            b"link" => {
                let rel = lower(&self.rel);
                let rels: Vec<&str> = rel.split_ascii_whitespace().collect();
                let href = self.href.as_deref()?;
                if rels.contains(&"stylesheet") && !rels.contains(&"alternate") {
                    Some((href, Kind::Style, !self.crossorigin))
                } else if rels.contains(&"preload") {
                    let kind = match lower(&self.as_).as_str() {
                        "style" => Kind::Style,
                        "script" => Kind::Script,
                        "image" => Kind::Image,
                        _ => Kind::Other,
                    };
                    Some((href, kind, kind != Kind::Other && !self.crossorigin))
                } else {
                    None
                }
            }
            b"script" => {
                let classic = match lower(&self.kind).as_str() {
                    "" | "text/javascript" | "application/javascript" => true,
                    "module" => false,
                    _ => return None,
                };
                Some((
                    self.src.as_deref()?,
                    Kind::Script,
                    classic && !self.crossorigin,
                ))
            }
            b"img" if lower(&self.loading) != "lazy" => {
                Some((self.src.as_deref()?, Kind::Image, false))
            }
            _ => None,
        }
    }
}

/// An attribute value from `i`: quoted (to the closing quote) or not (to
/// whitespace or `>`); the value and the index after it.
fn attribute_value(body: &[u8], i: usize) -> (&[u8], usize) {
    match body.get(i) {
        Some(&quote) if quote == b'"' || quote == b'\'' => {
            let start = i + 1;
            match body[start..].iter().position(|&b| b == quote) {
                Some(len) => (&body[start..start + len], start + len + 1),
                None => (&body[start..], body.len()),
            }
        }
        _ => {
            let len = body[i..]
                .iter()
                .take_while(|&&b| b != b'>' && !b.is_ascii_whitespace())
                .count();
            (&body[i..i + len], i + len)
        }
    }
}

/// Where `needle` (lower-case ASCII) first occurs in `body` from `from`,
/// ignoring ASCII case.
fn find(body: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    body.get(from..)?
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
        .map(|p| from + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(html: &str) -> Vec<String> {
        assets(html.as_bytes(), "/blog/post.html", "a.test", 64)
            .into_iter()
            .map(|a| a.target)
            .collect()
    }

    #[test]
    fn stylesheets_preloads_scripts_and_images_in_document_order() {
        let found = assets(
            br#"<!doctype html><html><head>
            <LINK REL="Stylesheet" HREF="/css/app.css">
            <link rel=preload href=../fonts/a.woff2 as=font crossorigin>
            <link rel="preload" as="image" href="hero.jpg">
            <link rel="icon" href="/favicon.ico">
            <script src="/js/app.js?v=2&amp;x=1" defer></script>
            <script type=module src=/js/mod.js></script>
            </head><body><img src='img/a.png' alt="x > y"><img src=img/b.png loading=lazy>
            </body></html>"#,
            "/blog/post.html",
            "a.test",
            64,
        );
        let summary: Vec<(&str, &str, bool)> = found
            .iter()
            .map(|a| (a.target.as_str(), a.kind.as_str(), a.hint))
            .collect();
        assert_eq!(
            summary,
            [
                ("/css/app.css", "style", true),
                ("/fonts/a.woff2", "other", false),
                ("/blog/hero.jpg", "image", true),
                ("/js/app.js?v=2&x=1", "script", true),
                ("/js/mod.js", "script", false),
                ("/blog/img/a.png", "image", false),
            ]
        );
    }

    #[test]
    fn other_sites_schemes_and_what_is_not_markup_are_left_out() {
        assert_eq!(
            targets(
                r#"<link rel=stylesheet href="https://cdn.other/a.css">
                <link rel="alternate stylesheet" href="/alt.css">
                <img src="data:image/png;base64,AAAA"><script src="javascript:void(0)"></script>
                <img src="https://a.test/same.png"><img src="//a.test/also.png">
                <!-- <img src="/commented.png"> -->
                <script>document.write('<img src="/written.png">')</script>
                <style>a{background:url(/bg.png)}</style><textarea><img src=/typed.png></textarea>
                <script type="text/template" src="/tpl.html"></script>
                <img src="/after.png"><img src="/after.png"><img src="">"#
            ),
            ["/same.png", "/also.png", "/after.png"]
        );
    }

    #[test]
    fn a_base_element_moves_relative_urls() {
        assert_eq!(
            targets(
                r#"<base href="/static/v2/"><link rel=stylesheet href=app.css><img src=/abs.png>"#
            ),
            ["/static/v2/app.css", "/abs.png"]
        );
        assert_eq!(
            targets(
                r#"<base href="https://cdn.other/"><img src=a.png><img src=/b.png><img src="https://a.test/c.png"><img src=//a.test/d>"#
            ),
            ["/c.png", "/d"],
            "a base on another site takes relative URLs there"
        );
        assert_eq!(
            targets(r#"<base target=_blank><base href="/x/"><base href="/y/"><img src=a.png>"#),
            ["/x/a.png"],
            "the first base with an href"
        );
    }

    #[test]
    fn malformed_and_hostile_markup_ends_cleanly() {
        for html in [
            &b""[..],
            b"<",
            b"<img",
            b"<img src",
            b"<img src=",
            b"<img src=\"/unterminated.png",
            b"<!--",
            b"<script src=/a.js>",
            b"<<<<>>>><img/src=/x.png/>",
            b"<img src=\xff\xfe.png><img src=/ok.png>",
            b"<link rel=stylesheet>",
            b"\x00\x01<\x00img src=/n.png>",
        ] {
            let _ = assets(html, "/", "a.test", 64);
        }
        assert_eq!(targets("<img/src=/x.png/>"), ["/x.png/"]);
        let not_utf8 = assets(
            b"<img src=\xff\xfe.png><img src=/ok.png>",
            "/",
            "a.test",
            64,
        );
        assert_eq!(not_utf8.len(), 1);
        assert_eq!(not_utf8[0].target, "/ok.png");
        assert_eq!(
            targets("<script src=/a.js>never closed <img src=/b.png>"),
            ["/a.js"]
        );
    }

    #[test]
    fn the_count_is_capped_and_huge_pages_are_scanned_once() {
        let mut page = String::new();
        for i in 0..100_000 {
            page.push_str(&format!("<img src=/i{i}.png>"));
        }
        assert_eq!(assets(page.as_bytes(), "/", "a.test", 16).len(), 16);
        let attributes = "<img ".to_owned() + &"a=b ".repeat(250_000) + "src=/late.png>";
        assert_eq!(targets(&attributes), ["/late.png"]);
        let long = format!("<img src=/{}.png>", "x".repeat(20_000));
        assert!(targets(&long).is_empty(), "longer than a target may be");
    }
}
