//! Prefetch what an HLS player asks for next.
//!
//! - A media playlist response (`.m3u8`, or a `Content-Type` of
//!   `application/vnd.apple.mpegurl`, `application/x-mpegurl`,
//!   `audio/mpegurl` or `audio/x-mpegurl`) with status 200: the module asks
//!   for its body, reads it (`playlist`), and prefetches its
//!   initialisation section (`#EXT-X-MAP`) and the segments a player
//!   starts with: the first `segments` of a finished playlist (video on
//!   demand, `#EXT-X-ENDLIST`), the last `segments` of a live one (players
//!   start near the live edge).
//! - A multivariant playlist: its first variant playlist, the one players
//!   start with (RFC 8216 §4.3.4.2 and Apple's authoring rules), and
//!   nothing else; that playlist's own response then prefetches its
//!   segments, if the site's prefetch depth allows.
//! - A hit, or a 200 from the origin, for segment k: segments k+1…k+N, from
//!   the playlist if this instance has read one that lists it (`library`),
//!   otherwise guessed from the name (`seg_00042.ts` → `seg_00043.ts`,
//!   `names`) unless `from_names = false`.
//!
//! Long-lived recommended: only a long-lived instance keeps the playlists
//! it read and reads `[init]`. Per request, the module still prefetches
//! the start of each playlist and follows segment names.

use std::cell::RefCell;

use stavka_policy::prefetch::{self, fetch_all, want_body};
use stavka_policy::{
    counter, export_policy, init_number, Entry, HitDecision, HookSet, Policy, Request, Response,
    ResponseOutcome,
};

mod library;
mod names;
mod playlist;

use library::Library;
use names::Extensions;
use playlist::{Limits, Media, Playlist};

/// The most bytes of segment targets kept per playlist.
const PLAYLIST_TARGET_BYTES: usize = 256 * 1024;

/// The media types of an HLS playlist (RFC 8216 §4 and the types players
/// still send).
const PLAYLIST_TYPES: &[&str] = &[
    "application/vnd.apple.mpegurl",
    "application/x-mpegurl",
    "audio/mpegurl",
    "audio/x-mpegurl",
];

struct HlsPrefetch;

/// The `[init]` settings.
#[derive(Debug, Clone)]
struct Settings {
    /// Segments prefetched ahead (`segments`).
    ahead: usize,
    /// Playlists an instance keeps (`playlists`; 0: none).
    playlists: usize,
    /// How much of each playlist it keeps (`max_segments`).
    limits: Limits,
    /// The largest playlist body read (`playlist_bytes`).
    playlist_bytes: u32,
    /// Whether to guess the next segments from a name (`from_names`).
    from_names: bool,
    /// What a segment's name ends with (`extensions`).
    extensions: Extensions,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            ahead: 3,
            playlists: 16,
            limits: Limits {
                segments: 2048,
                bytes: PLAYLIST_TARGET_BYTES,
            },
            playlist_bytes: 256 * 1024,
            from_names: true,
            extensions: Extensions::default(),
        }
    }
}

impl Settings {
    fn from_init(config: &[(String, String)]) -> Result<Settings, String> {
        let mut settings = Settings::default();
        for (key, value) in config {
            match key.as_str() {
                "segments" => settings.ahead = init_number(key, value, 1..=16)?,
                "playlists" => settings.playlists = init_number(key, value, 0..=32)?,
                "max_segments" => settings.limits.segments = init_number(key, value, 1..=16_384)?,
                "playlist_bytes" => {
                    settings.playlist_bytes =
                        init_number(key, value, 1024..=prefetch::MAX_BODY_BYTES)?
                }
                "from_names" => {
                    settings.from_names = value
                        .parse()
                        .map_err(|_| format!("from_names: {value:?} is not true or false"))?
                }
                "extensions" => settings.extensions = Extensions::parse(value)?,
                other => return Err(format!("unknown init key {other:?}")),
            }
        }
        Ok(settings)
    }
}

thread_local! {
    static SETTINGS: RefCell<Settings> = RefCell::new(Settings::default());
    static LIBRARY: RefCell<Library> = RefCell::new(Library::default());
}

impl Policy for HlsPrefetch {
    const HOOKS: HookSet = HookSet::ON_RESPONSE
        .union(HookSet::ON_HIT)
        .union(HookSet::INIT);

    fn init(config: &[(String, String)]) -> Result<(), String> {
        let settings = Settings::from_init(config)?;
        SETTINGS.set(settings);
        Ok(())
    }

    fn on_response(req: &Request, resp: &Response) -> ResponseOutcome {
        if resp.status != 200 {
            return ResponseOutcome::default();
        }
        if is_playlist(req, resp) {
            want_body(SETTINGS.with_borrow(|s| s.playlist_bytes));
        } else {
            prefetch_after(req);
        }
        ResponseOutcome::default()
    }

    fn on_hit(req: &Request, entry: &Entry) -> HitDecision {
        if entry.status == 200 {
            prefetch_after(req);
        }
        HitDecision::Serve
    }

    fn on_body(req: &Request, _resp: &Response, body: &[u8]) {
        let settings = SETTINGS.with_borrow(Settings::clone);
        match playlist::parse(body, req.path(), req.host(), settings.limits) {
            None => counter("playlists_unreadable", 1),
            Some(Playlist::Multivariant { first_variant }) => {
                fetch_all(first_variant);
            }
            Some(Playlist::Media(media)) => {
                fetch_all(
                    media
                        .map
                        .iter()
                        .chain(starting_segments(&media, settings.ahead)),
                );
                LIBRARY.with_borrow_mut(|library| {
                    library.learn(req.host(), req.path(), media.segments, settings.playlists)
                });
            }
        }
    }
}

export_policy!(HlsPrefetch);

/// Whether the response is a playlist: by its path, or by its type.
fn is_playlist(req: &Request, resp: &Response) -> bool {
    let path = req.path().as_bytes();
    let by_path = path.len() >= 5 && path[path.len() - 5..].eq_ignore_ascii_case(b".m3u8");
    by_path
        || resp.header("content-type").is_some_and(|value| {
            let media_type = value.split(';').next().unwrap_or_default().trim();
            PLAYLIST_TYPES
                .iter()
                .any(|t| t.eq_ignore_ascii_case(media_type))
        })
}

/// The segments a player starts with: the first of a finished playlist,
/// the last of a live one (none if the live one was cut short, as its end
/// is unknown).
fn starting_segments(media: &Media, n: usize) -> &[String] {
    let segments = &media.segments;
    if media.ended {
        &segments[..n.min(segments.len())]
    } else if media.truncated {
        &[]
    } else {
        &segments[segments.len().saturating_sub(n)..]
    }
}

/// Prefetch the segments after the requested one, if it is one.
fn prefetch_after(req: &Request) {
    let target = match req.query() {
        Some(query) => format!("{}?{query}", req.path()),
        None => req.path().to_owned(),
    };
    let settings = SETTINGS.with_borrow(Settings::clone);
    // The host is read only when there are playlists to look in (never per
    // request), so a decision that prefetches nothing depends on the
    // target alone.
    let known = LIBRARY.with_borrow_mut(|library| {
        (library.len() > 0)
            .then(|| library.next_after(req.host(), &target, settings.ahead))
            .flatten()
    });
    let next = match known {
        Some(next) => next,
        None if settings.from_names => {
            names::next_targets(&target, settings.ahead, &settings.extensions)
        }
        None => return,
    };
    fetch_all(next);
}

#[cfg(test)]
mod tests {
    use super::*;
    use stavka_policy::testing::{self, entry, request, response, RequestBuilder};
    use stavka_policy::Refusal;

    const VOD: &str = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-MAP:URI=\"init.mp4\"\n\
        #EXTINF:4,\nintro.m4s\n#EXTINF:4,\nmain-a.m4s\n#EXTINF:4,\nmain-b.m4s\n\
        #EXTINF:4,\nmain-c.m4s\n#EXTINF:4,\nmain-d.m4s\n#EXTINF:4,\nhttps://ads.other/x.m4s\n\
        #EXTINF:4,\nend.m4s\n#EXT-X-ENDLIST\n";

    fn init(pairs: &[(&str, &str)]) -> Result<(), String> {
        let config: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        HlsPrefetch::init(&config)
    }

    /// Deliver `body` for the playlist at `path`, as the host would after
    /// `on_response` asked for it.
    fn body(path: &str, body: &[u8]) {
        HlsPrefetch::on_body(&request("GET", path), &response(200), body);
    }

    fn hit(target: &str) -> Vec<String> {
        testing::clear_prefetches();
        let decision = HlsPrefetch::on_hit(&request("GET", target), &entry(200, 10, &[]));
        assert!(matches!(decision, HitDecision::Serve));
        testing::prefetched()
    }

    #[test]
    fn a_playlist_response_asks_for_its_body() {
        testing::reset();
        HlsPrefetch::on_response(&request("GET", "/v/index.M3U8"), &response(200));
        assert_eq!(testing::wanted_body(), Some(256 * 1024));

        testing::clear_prefetches();
        testing::set_response_header(
            "content-type",
            "Application/VND.Apple.MpegURL; charset=utf-8",
        );
        HlsPrefetch::on_response(&request("GET", "/live/stream"), &response(200));
        assert!(testing::wanted_body().is_some(), "known by its type");

        testing::clear_prefetches();
        HlsPrefetch::on_response(&request("GET", "/v/index.m3u8"), &response(404));
        testing::set_response_header("content-type", "text/plain");
        HlsPrefetch::on_response(&request("GET", "/v/readme.txt"), &response(200));
        assert_eq!(
            testing::wanted_body(),
            None,
            "an error or another type: no body"
        );
        assert!(testing::prefetches().is_empty());
    }

    #[test]
    fn a_vod_playlist_prefetches_its_start_then_follows_the_player() {
        testing::reset();
        body("/v/720p/index.m3u8", VOD.as_bytes());
        assert_eq!(
            testing::prefetched(),
            [
                "/v/720p/init.mp4",
                "/v/720p/intro.m4s",
                "/v/720p/main-a.m4s",
                "/v/720p/main-b.m4s"
            ]
        );
        assert_eq!(
            hit("/v/720p/main-a.m4s"),
            [
                "/v/720p/main-b.m4s",
                "/v/720p/main-c.m4s",
                "/v/720p/main-d.m4s"
            ],
            "names without numbers, found in the playlist; another host's segment skipped"
        );
        assert_eq!(hit("/v/720p/main-d.m4s"), ["/v/720p/end.m4s"]);
        assert!(
            hit("/v/720p/end.m4s").is_empty(),
            "nothing after the last segment"
        );

        testing::clear_prefetches();
        HlsPrefetch::on_response(&request("GET", "/v/720p/main-b.m4s"), &response(200));
        assert_eq!(
            testing::prefetched().len(),
            3,
            "a miss follows the player as a hit does"
        );
        testing::clear_prefetches();
        HlsPrefetch::on_hit(&request("GET", "/v/720p/main-b.m4s"), &entry(404, 10, &[]));
        assert!(testing::prefetches().is_empty(), "not for an error");
    }

    #[test]
    fn a_live_playlist_prefetches_its_live_edge() {
        testing::reset();
        let mut live = String::from("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:40\n");
        for i in 40..46 {
            live.push_str(&format!("#EXTINF:4,\nseg_{i:05}.ts\n"));
        }
        body("/live/index.m3u8", live.as_bytes());
        assert_eq!(
            testing::prefetched(),
            [
                "/live/seg_00043.ts",
                "/live/seg_00044.ts",
                "/live/seg_00045.ts"
            ]
        );
        assert!(
            hit("/live/seg_00045.ts").is_empty(),
            "the live edge: the playlist knows no more yet"
        );
    }

    #[test]
    fn a_multivariant_playlist_prefetches_its_first_variant_only() {
        testing::reset();
        body(
            "/v/master.m3u8",
            b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=5000000\n1080p/index.m3u8\n\
              #EXT-X-STREAM-INF:BANDWIDTH=800000\n360p/index.m3u8\n",
        );
        assert_eq!(testing::prefetched(), ["/v/1080p/index.m3u8"]);
    }

    #[test]
    fn without_the_playlist_the_next_segments_follow_the_name() {
        testing::reset();
        assert_eq!(
            hit("/v/seg_00042.ts?token=t"),
            [
                "/v/seg_00043.ts?token=t",
                "/v/seg_00044.ts?token=t",
                "/v/seg_00045.ts?token=t"
            ]
        );
        assert!(hit("/v/poster.jpg").is_empty());
        assert!(
            hit("/v/seg42.mp4").is_empty(),
            "not a segment extension by default"
        );
        testing::clear_request_reads();
        hit("/v/seg1.ts");
        assert_eq!(
            testing::request_reads(),
            ["query", "path"],
            "no playlists: the host is not read"
        );

        init(&[("from_names", "false")]).unwrap();
        assert!(hit("/v/seg_00042.ts").is_empty());
        init(&[("extensions", "mp4"), ("segments", "1")]).unwrap();
        assert_eq!(hit("/v/seg42.mp4"), ["/v/seg43.mp4"]);
    }

    #[test]
    fn the_playlist_wins_over_the_name_and_sites_are_apart() {
        testing::reset();
        body(
            "/v/index.m3u8",
            b"#EXTM3U\n#EXTINF:4,\ns1.ts\n#EXTINF:4,\ns7.ts\n#EXT-X-ENDLIST\n",
        );
        assert!(
            hit("/v/s7.ts").is_empty(),
            "the playlist ends there, whatever the name suggests"
        );
        testing::clear_prefetches();
        let other = RequestBuilder::new("GET", "/v/s7.ts")
            .host("b.test")
            .build();
        HlsPrefetch::on_hit(&other, &entry(200, 10, &[]));
        assert_eq!(
            testing::prefetched(),
            ["/v/s8.ts", "/v/s9.ts", "/v/s10.ts"],
            "another site's request: by name"
        );
    }

    #[test]
    fn settings_come_from_init_and_are_checked() {
        testing::reset();
        init(&[
            ("segments", "2"),
            ("playlist_bytes", "4096"),
            ("playlists", "0"),
        ])
        .unwrap();
        HlsPrefetch::on_response(&request("GET", "/p.m3u8"), &response(200));
        assert_eq!(testing::wanted_body(), Some(4096));
        body("/p.m3u8", VOD.as_bytes());
        assert_eq!(testing::prefetched().len(), 3, "the map and two segments");
        assert!(
            hit("/main-a.m4s").is_empty(),
            "no playlists kept, and not a numbered name"
        );
        for bad in [
            ("segments", "0"),
            ("segments", "17"),
            ("playlists", "33"),
            ("max_segments", "x"),
            ("playlist_bytes", "2000000"),
            ("from_names", "yes"),
            ("extensions", "t s"),
            ("segmnets", "3"),
        ] {
            assert!(init(&[bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_full_queue_stops_the_call_asking() {
        testing::reset();
        testing::answer_prefetches(|_| Err(Refusal::OverBudget));
        body("/v/720p/index.m3u8", VOD.as_bytes());
        assert_eq!(
            testing::prefetches().len(),
            1,
            "one refusal that holds for the rest"
        );
        assert_eq!(
            hit("/v/720p/intro.m4s"),
            Vec::<String>::new(),
            "but the playlist was kept"
        );
        assert_eq!(testing::prefetches().len(), 1);
    }

    #[test]
    fn malformed_huge_and_binary_bodies_do_no_harm() {
        testing::reset();
        let mut huge = String::from("#EXTM3U\n");
        let mut i = 0;
        while huge.len() < 1 << 20 {
            huge.push_str(&format!("#EXTINF:4,\n{i:0300}.ts\n"));
            i += 1;
        }
        huge.push_str("#EXT-X-ENDLIST\n");
        let mut binary: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
        binary[..8].copy_from_slice(b"#EXTM3U\n");
        for body_bytes in [
            &b""[..],
            b"#EXTM3U",
            b"#EXTM3U\n#EXTINF:4,",
            b"#EXTM3U\n\n\n\r\r\n#EXT-X-STREAM-INF:\n",
            b"#EXTM3U\n#EXTINF:4,\n../../../../../../etc/passwd\n",
            &binary,
            &[0xff; 4096],
        ] {
            body("/p.m3u8", body_bytes);
        }
        assert_eq!(testing::counter_value("playlists_unreadable"), 3);
        assert_eq!(
            testing::prefetched(),
            ["/etc/passwd"],
            "only a same-site path, never above the root"
        );

        testing::clear_prefetches();
        body("/big.m3u8", huge.as_bytes());
        assert_eq!(testing::prefetched().len(), 3);
        let first = format!("/{:0300}.ts", 0);
        let after = LIBRARY.with_borrow_mut(|l| l.next_after("localhost", &first, 16_384));
        let kept = after.map_or(0, |next| next.len() + 1);
        assert!(
            kept > 0 && kept * first.len() <= PLAYLIST_TARGET_BYTES,
            "{kept} segments kept"
        );
    }

    #[test]
    fn kept_playlists_are_bounded() {
        testing::reset();
        init(&[("playlists", "4"), ("max_segments", "10")]).unwrap();
        let mut long = String::from("#EXTM3U\n");
        for i in 0..1000 {
            long.push_str(&format!("#EXTINF:4,\nx{i}.aac\n"));
        }
        long.push_str("#EXT-X-ENDLIST\n");
        for p in 0..100 {
            body(&format!("/{p}/index.m3u8"), long.as_bytes());
        }
        assert_eq!(LIBRARY.with_borrow(Library::len), 4);
        assert_eq!(
            hit("/99/x8.aac"),
            ["/99/x9.aac"],
            "ten segments kept: the playlist ends there"
        );
        assert_eq!(hit("/99/x500.aac").len(), 3, "past the kept ones: by name");
        assert_eq!(
            hit("/0/x1.aac"),
            ["/0/x2.aac", "/0/x3.aac", "/0/x4.aac"],
            "an evicted playlist: by name"
        );
    }
}
