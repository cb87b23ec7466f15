//! 103 Early Hints (RFC 8297) from what a page's last response preloaded:
//! the `Link: <…>; rel=preload` fields of a page are remembered by cache
//! key, and sent in a 103 before the origin is asked for that page again
//! (a miss, or a revalidation of a stale copy).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use http::{HeaderMap, HeaderValue};

/// Pages whose links are remembered; the oldest are forgotten first.
const PAGES: usize = 4096;
/// Links sent in one 103, at most.
pub const MAX_LINKS: usize = 16;
/// The longest link kept.
const MAX_LINK: usize = 1024;

#[derive(Default)]
struct Pages {
    links: HashMap<u128, Arc<[HeaderValue]>>,
    order: VecDeque<u128>,
}

/// Remembered preload links, by cache key (primary hash).
#[derive(Default)]
pub struct Hints(Mutex<Pages>);

impl Hints {
    /// Remember the preload links of the response stored under `key`
    /// (forget them if it has none).
    pub fn learn(&self, key: u128, headers: &HeaderMap) {
        let links = preload_links(headers);
        let mut pages = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if links.is_empty() {
            if pages.links.remove(&key).is_some() {
                pages.order.retain(|k| *k != key);
            }
            return;
        }
        if pages.links.insert(key, links.into()).is_none() {
            pages.order.push_back(key);
            if pages.order.len() > PAGES {
                if let Some(oldest) = pages.order.pop_front() {
                    pages.links.remove(&oldest);
                }
            }
        }
    }

    /// The links remembered for `key`.
    pub fn links(&self, key: u128) -> Option<Arc<[HeaderValue]>> {
        let pages = self.0.lock().unwrap_or_else(|e| e.into_inner());
        pages.links.get(&key).cloned()
    }
}

/// The `Link` field values of `headers` whose relation types include
/// `preload` (RFC 8288 §3.3), one link each, at most [`MAX_LINKS`].
pub fn preload_links(headers: &HeaderMap) -> Vec<HeaderValue> {
    headers
        .get_all(http::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(split_links)
        .filter(|link| link.len() <= MAX_LINK && is_preload(link))
        .filter_map(|link| HeaderValue::from_str(link).ok())
        .take(MAX_LINKS)
        .collect()
}

/// The links of one field value: split at commas outside `<…>` and quoted
/// strings.
fn split_links(value: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut start, mut in_uri, mut in_quote, mut escaped) = (0, false, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quote => escaped = true,
            '"' if !in_uri => in_quote = !in_quote,
            '<' if !in_quote => in_uri = true,
            '>' if !in_quote => in_uri = false,
            ',' if !in_uri && !in_quote => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| p.starts_with('<'))
}

/// Whether one link's `rel` parameter names `preload`.
fn is_preload(link: &str) -> bool {
    let Some(end) = link.find('>') else {
        return false;
    };
    link[end + 1..].split(';').any(|param| {
        let Some((name, value)) = param.split_once('=') else {
            return false;
        };
        name.trim().eq_ignore_ascii_case("rel")
            && value
                .trim()
                .trim_matches('"')
                .split_ascii_whitespace()
                .any(|rel| rel.eq_ignore_ascii_case("preload"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(values: &[&str]) -> Vec<String> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("link", v.parse().unwrap());
        }
        preload_links(&headers)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn rfc8288_preload_links_are_picked_from_each_field() {
        assert_eq!(
            links(&[
                "</app.css>; rel=preload; as=style, </x,y.js>; rel=\"preload modulepreload\"; as=script",
                "</next>; rel=next",
                "</font.woff2>; title=\"a, rel=preload\"; rel=prefetch",
            ]),
            [
                "</app.css>; rel=preload; as=style",
                "</x,y.js>; rel=\"preload modulepreload\"; as=script"
            ]
        );
        assert!(links(&["garbage, <unclosed; rel=preload"]).is_empty());
    }

    #[test]
    fn pages_are_bounded_and_a_page_without_links_is_forgotten() {
        let hints = Hints::default();
        let mut with = HeaderMap::new();
        with.insert("link", "</a.css>; rel=preload".parse().unwrap());
        for key in 0..(PAGES as u128 + 10) {
            hints.learn(key, &with);
        }
        assert!(hints.links(0).is_none(), "the oldest went first");
        assert_eq!(hints.links(PAGES as u128).unwrap().len(), 1);
        hints.learn(PAGES as u128, &HeaderMap::new());
        assert!(hints.links(PAGES as u128).is_none());
        assert!(hints.0.lock().unwrap().links.len() <= PAGES);
    }
}
