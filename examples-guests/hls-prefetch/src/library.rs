//! The media playlists an instance has read, so that a request for
//! segment k finds k+1… in the playlist itself: bounded in playlists and,
//! through [`playlist::Limits`](crate::playlist::Limits), in segments.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

/// The playlists read, least recently used first.
#[derive(Debug, Default)]
pub struct Library {
    playlists: VecDeque<Known>,
}

/// One media playlist's segments.
#[derive(Debug)]
struct Known {
    host: String,
    path: String,
    segments: Vec<String>,
    /// A segment's position by the hash of its target (checked against
    /// `segments`, so a collision is a miss, never a wrong segment).
    positions: HashMap<u64, usize>,
}

impl Library {
    /// Keep `segments` as the playlist at `path` on `host`, replacing what
    /// was known of it, and forget the least recently used playlists
    /// beyond `capacity` (0 keeps nothing).
    pub fn learn(&mut self, host: &str, path: &str, segments: Vec<String>, capacity: usize) {
        self.playlists
            .retain(|k| !(k.host == host && k.path == path));
        if capacity == 0 || segments.is_empty() {
            return;
        }
        while self.playlists.len() >= capacity {
            self.playlists.pop_front();
        }
        let mut positions = HashMap::with_capacity(segments.len());
        for (i, segment) in segments.iter().enumerate() {
            positions.entry(hash(segment)).or_insert(i);
        }
        self.playlists.push_back(Known {
            host: host.to_owned(),
            path: path.to_owned(),
            segments,
            positions,
        });
    }

    /// The up to `n` segments after `target` on `host` in the most recently
    /// used playlist that lists it (empty after its last segment), or
    /// `None` if no playlist read lists it. The playlist becomes the most
    /// recently used.
    pub fn next_after(&mut self, host: &str, target: &str, n: usize) -> Option<Vec<String>> {
        let key = hash(target);
        let found = self.playlists.iter().rposition(|k| {
            k.host == host
                && k.positions
                    .get(&key)
                    .is_some_and(|&i| k.segments[i] == target)
        })?;
        let known = self.playlists.remove(found)?;
        let position = known.positions[&key];
        let next = known
            .segments
            .iter()
            .skip(position + 1)
            .take(n)
            .cloned()
            .collect();
        self.playlists.push_back(known);
        Some(next)
    }

    /// How many playlists are kept.
    pub fn len(&self) -> usize {
        self.playlists.len()
    }
}

fn hash(target: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    target.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}/{i}.ts")).collect()
    }

    #[test]
    fn the_next_segments_come_from_the_playlist_up_to_its_end() {
        let mut library = Library::default();
        library.learn("a.test", "/v/p.m3u8", segments("/v", 5), 4);
        assert_eq!(
            library.next_after("a.test", "/v/1.ts", 2),
            Some(vec!["/v/2.ts".into(), "/v/3.ts".into()])
        );
        assert_eq!(
            library.next_after("a.test", "/v/3.ts", 3),
            Some(vec!["/v/4.ts".into()])
        );
        assert_eq!(
            library.next_after("a.test", "/v/4.ts", 3),
            Some(vec![]),
            "the last one: nothing after"
        );
        assert_eq!(library.next_after("a.test", "/v/9.ts", 3), None);
        assert_eq!(
            library.next_after("b.test", "/v/1.ts", 3),
            None,
            "sites are apart"
        );
    }

    #[test]
    fn a_playlist_read_again_replaces_itself_and_the_oldest_go_first() {
        let mut library = Library::default();
        library.learn("a.test", "/1.m3u8", segments("/1", 3), 2);
        library.learn("a.test", "/2.m3u8", segments("/2", 3), 2);
        library.learn("a.test", "/1.m3u8", segments("/1b", 3), 2);
        assert_eq!(library.len(), 2);
        assert_eq!(library.next_after("a.test", "/1/0.ts", 1), None, "replaced");
        assert!(library.next_after("a.test", "/1b/0.ts", 1).is_some());
        // /2 is now the least recently used.
        library.learn("a.test", "/3.m3u8", segments("/3", 3), 2);
        assert_eq!(library.len(), 2);
        assert_eq!(library.next_after("a.test", "/2/0.ts", 1), None, "evicted");
        assert!(library.next_after("a.test", "/1b/0.ts", 1).is_some());
        assert!(library.next_after("a.test", "/3/0.ts", 1).is_some());
        library.learn("a.test", "/3.m3u8", Vec::new(), 2);
        assert_eq!(library.len(), 1, "an empty playlist is forgotten");
        library.learn("a.test", "/4.m3u8", segments("/4", 3), 0);
        assert_eq!(library.len(), 1, "capacity 0 keeps nothing new");
    }

    #[test]
    fn a_segment_listed_twice_continues_from_its_first_place() {
        let mut library = Library::default();
        let list = vec![
            "/a.ts".to_owned(),
            "/b.ts".to_owned(),
            "/a.ts".to_owned(),
            "/c.ts".to_owned(),
        ];
        library.learn("a.test", "/p.m3u8", list, 1);
        assert_eq!(
            library.next_after("a.test", "/a.ts", 1),
            Some(vec!["/b.ts".into()])
        );
    }
}
