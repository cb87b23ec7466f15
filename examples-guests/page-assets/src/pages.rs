//! The Early Hints links an instance learnt from each page's last
//! response: bounded in pages, links per page and link length.

use std::collections::HashMap;

/// The longest page path kept: longer ones are not learnt.
pub const MAX_PATH: usize = 1024;

/// The longest target a hint names: longer ones are not hinted.
pub const MAX_HINT_TARGET: usize = 512;

/// Pages by site and path, each with its links and when it was last used.
#[derive(Debug, Default)]
pub struct Pages {
    pages: HashMap<(String, String), Learnt>,
    clock: u64,
}

#[derive(Debug)]
struct Learnt {
    links: Vec<String>,
    used: u64,
}

impl Pages {
    /// Keep `links` for the page at `path` on `host`, replacing what was
    /// learnt of it (no links: forget it), and forget the least recently
    /// used page beyond `capacity` (0 keeps nothing).
    pub fn learn(&mut self, host: &str, path: &str, links: Vec<String>, capacity: usize) {
        let key = (host.to_owned(), path.to_owned());
        if links.is_empty() || capacity == 0 || path.len() > MAX_PATH {
            self.pages.remove(&key);
            return;
        }
        self.clock += 1;
        if !self.pages.contains_key(&key) {
            while self.pages.len() >= capacity {
                // Linear, but only when a new page arrives at a full map.
                let oldest = self
                    .pages
                    .iter()
                    .min_by_key(|(_, learnt)| learnt.used)
                    .map(|(key, _)| key.clone());
                match oldest {
                    Some(oldest) => self.pages.remove(&oldest),
                    None => break,
                };
            }
        }
        let used = self.clock;
        self.pages.insert(key, Learnt { links, used });
    }

    /// The links learnt for the page at `path` on `host`, which becomes the
    /// most recently used.
    pub fn links(&mut self, host: &str, path: &str) -> Option<&[String]> {
        self.clock += 1;
        let learnt = self.pages.get_mut(&(host.to_owned(), path.to_owned()))?;
        learnt.used = self.clock;
        Some(&learnt.links)
    }

    /// Whether no page is kept.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// How many pages are kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.pages.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn pages_are_kept_per_site_and_replaced() {
        let mut pages = Pages::default();
        pages.learn("a.test", "/", links(&["</a.css>"]), 8);
        assert_eq!(pages.links("a.test", "/"), Some(&links(&["</a.css>"])[..]));
        assert_eq!(pages.links("b.test", "/"), None);
        pages.learn("a.test", "/", links(&["</b.css>"]), 8);
        assert_eq!(pages.links("a.test", "/"), Some(&links(&["</b.css>"])[..]));
        pages.learn("a.test", "/", Vec::new(), 8);
        assert!(pages.is_empty(), "a page that links nothing is forgotten");
        pages.learn("a.test", &"/x".repeat(MAX_PATH), links(&["</a>"]), 8);
        assert!(pages.is_empty(), "a path too long to keep");
    }

    #[test]
    fn the_least_recently_used_page_goes_first() {
        let mut pages = Pages::default();
        for p in ["/1", "/2", "/3"] {
            pages.learn("a.test", p, links(&["</a>"]), 3);
        }
        pages.links("a.test", "/1");
        pages.learn("a.test", "/4", links(&["</a>"]), 3);
        assert_eq!(pages.len(), 3);
        assert!(
            pages.links("a.test", "/2").is_none(),
            "the least recently used"
        );
        assert!(pages.links("a.test", "/1").is_some());
        pages.learn("a.test", "/1", links(&["</b>"]), 3);
        assert_eq!(pages.len(), 3, "replacing evicts nothing");
        for p in 0..1000 {
            pages.learn("a.test", &format!("/many/{p}"), links(&["</a>"]), 3);
        }
        assert_eq!(pages.len(), 3);
    }
}
