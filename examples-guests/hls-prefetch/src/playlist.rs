//! A small, strict reader of HLS playlists (RFC 8216): just what
//! prefetching needs, every part of it bounded.

use stavka_policy::prefetch::same_site_target;

/// What a playlist says about what a player fetches next.
#[derive(Debug, PartialEq, Eq)]
pub enum Playlist {
    /// A media playlist (RFC 8216 §4.3.3): its segments, in order.
    Media(Media),
    /// A multivariant ("master") playlist (§4.3.4): the first variant
    /// playlist it lists, the one a client starts with, if it is on this
    /// site.
    Multivariant { first_variant: Option<String> },
}

/// A media playlist's segments, as same-site targets.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Media {
    /// The media initialisation section (`#EXT-X-MAP`, fMP4), fetched
    /// before the first segment.
    pub map: Option<String>,
    /// The segments' targets, in playlist order, those on other hosts left
    /// out, at most the limits given to [`parse`].
    pub segments: Vec<String>,
    /// `#EXT-X-ENDLIST`: no segments will be added (video on demand).
    /// Without it the playlist is live and players start near its end.
    pub ended: bool,
    /// More segments followed than the limits kept.
    pub truncated: bool,
}

/// How much of a media playlist [`parse`] keeps.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The most segments kept.
    pub segments: usize,
    /// The most bytes of targets kept.
    pub bytes: usize,
}

/// Read `body`, a playlist found at `base_path` on `host`. `None` if it is
/// not a playlist by RFC 8216: not UTF-8 (§4.1), not starting with
/// `#EXTM3U` (§4.3.1.1), or both a media and a multivariant playlist
/// (§4.1).
pub fn parse(body: &[u8], base_path: &str, host: &str, limits: Limits) -> Option<Playlist> {
    let text = std::str::from_utf8(body).ok()?;
    let mut lines = text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line));
    if lines.next()? != "#EXTM3U" {
        return None;
    }
    let resolve = |uri: &str| same_site_target(base_path, host, uri);
    let mut media = Media::default();
    let mut bytes = 0;
    let mut next_is = Next::Nothing;
    let mut is_media = false;
    let mut first_variant = None;
    let mut variants = 0usize;
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if let Some(tag) = line.strip_prefix('#') {
            if tag.starts_with("EXTINF:") {
                is_media = true;
                next_is = Next::Segment;
            } else if tag.starts_with("EXT-X-STREAM-INF:") {
                next_is = Next::Variant;
            } else if tag == "EXT-X-ENDLIST" {
                media.ended = true;
            } else if let Some(attributes) = tag.strip_prefix("EXT-X-MAP:") {
                is_media = true;
                if media.map.is_none() {
                    media.map = quoted_attribute(attributes, "URI").and_then(resolve);
                }
            }
            continue;
        }
        // A URI line: what it is depends on the tag before it.
        match std::mem::replace(&mut next_is, Next::Nothing) {
            Next::Nothing => {}
            Next::Variant => {
                variants += 1;
                if variants == 1 {
                    first_variant = resolve(line);
                }
            }
            Next::Segment => {
                let Some(target) = resolve(line) else {
                    continue;
                };
                // A byte-range playlist names one file for many segments.
                if media.segments.last() == Some(&target) {
                    continue;
                }
                if media.segments.len() >= limits.segments || bytes + target.len() > limits.bytes {
                    media.truncated = true;
                    continue;
                }
                bytes += target.len();
                media.segments.push(target);
            }
        }
    }
    match (is_media, variants > 0) {
        (true, true) => None,
        (false, true) => Some(Playlist::Multivariant { first_variant }),
        _ => Some(Playlist::Media(media)),
    }
}

/// What the next URI line is.
enum Next {
    Nothing,
    Segment,
    Variant,
}

/// A quoted-string attribute's value from an attribute list (RFC 8216
/// §4.2): `URI="init.mp4"`.
fn quoted_attribute<'a>(attributes: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = attributes;
    loop {
        let (key, after) = rest.split_once('=')?;
        let after = if let Some(quoted) = after.strip_prefix('"') {
            let (value, after) = quoted.split_once('"')?;
            if key == name {
                return Some(value);
            }
            after
        } else {
            after
        };
        rest = after.split_once(',')?.1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        segments: 2048,
        bytes: 256 * 1024,
    };

    fn media(body: &str) -> Media {
        match parse(body.as_bytes(), "/v/720p/index.m3u8", "a.test", LIMITS) {
            Some(Playlist::Media(media)) => media,
            other => panic!("not a media playlist: {other:?}"),
        }
    }

    #[test]
    fn a_vod_playlist_lists_its_segments_resolved_against_its_path() {
        let m = media(
            "#EXTM3U\r\n#EXT-X-VERSION:7\r\n#EXT-X-TARGETDURATION:4\r\n\
             #EXT-X-MAP:URI=\"init.mp4\",BYTERANGE=\"720@0\"\r\n\
             #EXTINF:4.0,\r\nseg_00000.m4s\r\n\
             #EXTINF:4.0,title\r\n#EXT-X-DISCONTINUITY\r\n/v/720p/seg_00001.m4s\r\n\
             #EXTINF:4.0,\r\nhttps://a.test/v/720p/seg_00002.m4s?t=1#f\r\n\
             #EXTINF:4.0,\r\nhttps://other.test/seg_00003.m4s\r\n\
             #EXTINF:4.0,\r\n../480p/seg_00004.m4s\r\n\
             #EXT-X-ENDLIST\r\n",
        );
        assert_eq!(m.map.as_deref(), Some("/v/720p/init.mp4"));
        assert_eq!(
            m.segments,
            [
                "/v/720p/seg_00000.m4s",
                "/v/720p/seg_00001.m4s",
                "/v/720p/seg_00002.m4s?t=1",
                "/v/480p/seg_00004.m4s",
            ]
        );
        assert!(m.ended && !m.truncated);
    }

    #[test]
    fn a_live_playlist_has_no_end_and_byte_ranges_name_one_file_once() {
        let m = media(
            "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:100\n\
             #EXTINF:4,\n#EXT-X-BYTERANGE:1000@0\nall.ts\n\
             #EXTINF:4,\n#EXT-X-BYTERANGE:1000@1000\nall.ts\n\
             stray.ts\n#EXTINF:4,\nnext.ts",
        );
        assert_eq!(
            m.segments,
            ["/v/720p/all.ts", "/v/720p/next.ts"],
            "a URI without #EXTINF is not a segment"
        );
        assert!(!m.ended);
    }

    #[test]
    fn a_multivariant_playlist_names_its_first_variant() {
        let body = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1280000\n720p/index.m3u8\n\
                    #EXT-X-STREAM-INF:BANDWIDTH=640000\n480p/index.m3u8\n";
        assert_eq!(
            parse(body.as_bytes(), "/v/master.m3u8", "a.test", LIMITS),
            Some(Playlist::Multivariant {
                first_variant: Some("/v/720p/index.m3u8".into())
            })
        );
        let elsewhere = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nhttps://cdn.other/a.m3u8\n";
        assert_eq!(
            parse(elsewhere.as_bytes(), "/v/master.m3u8", "a.test", LIMITS),
            Some(Playlist::Multivariant {
                first_variant: None
            })
        );
    }

    #[test]
    fn what_is_not_a_playlist_by_rfc_8216_is_refused() {
        for body in [
            &b""[..],
            b"\n#EXTM3U\n",
            b"\xef\xbb\xbf#EXTM3U\n#EXTINF:4,\na.ts\n",
            b"#EXTM3U\n#EXTINF:4,\n\xff\xfe.ts\n",
            b"<html>#EXTM3U</html>",
            b"#EXTM3U\n#EXTINF:4,\na.ts\n#EXT-X-STREAM-INF:BANDWIDTH=1\nb.m3u8\n",
        ] {
            assert_eq!(parse(body, "/p.m3u8", "a.test", LIMITS), None, "{body:?}");
        }
    }

    #[test]
    fn malformed_lines_are_skipped_not_trusted() {
        let m = media(
            "#EXTM3U\n#EXT-X-MAP:URI=\"unterminated\n#EXTINF\n#EXTINF:4,\n\
             javascript:alert(1)\n#EXTINF:4,\nsp ace.ts\n#EXTINF:4,\n\
             http://a.test:8080/x.ts\n#EXTINF:4,\nok.ts\n#EXTINF:4,\n",
        );
        assert_eq!(m.map, None);
        assert_eq!(m.segments, ["/v/720p/ok.ts"]);
    }

    #[test]
    fn the_limits_bound_what_is_kept() {
        let mut body = String::from("#EXTM3U\n");
        for i in 0..10_000 {
            body.push_str(&format!("#EXTINF:4,\nseg{i}.ts\n"));
        }
        let few = Limits {
            segments: 3,
            bytes: 1 << 20,
        };
        let Some(Playlist::Media(m)) = parse(body.as_bytes(), "/p.m3u8", "a.test", few) else {
            panic!("media");
        };
        assert_eq!(m.segments, ["/seg0.ts", "/seg1.ts", "/seg2.ts"]);
        assert!(m.truncated);
        let small = Limits {
            segments: 10_000,
            bytes: 100,
        };
        let Some(Playlist::Media(m)) = parse(body.as_bytes(), "/p.m3u8", "a.test", small) else {
            panic!("media");
        };
        assert!(m.segments.iter().map(String::len).sum::<usize>() <= 100);
        assert!(m.truncated);
    }

    #[test]
    fn quoted_attributes() {
        assert_eq!(quoted_attribute("URI=\"a.mp4\"", "URI"), Some("a.mp4"));
        assert_eq!(
            quoted_attribute("BYTERANGE=\"1@0\",URI=\"b,c.mp4\"", "URI"),
            Some("b,c.mp4")
        );
        assert_eq!(quoted_attribute("X=1,URI=\"d\"", "URI"), Some("d"));
        assert_eq!(quoted_attribute("XURI=\"d\"", "URI"), None);
        assert_eq!(quoted_attribute("URI=d", "URI"), None);
        assert_eq!(quoted_attribute("", "URI"), None);
    }
}
