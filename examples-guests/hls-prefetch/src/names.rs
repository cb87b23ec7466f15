//! The next segments guessed from a segment's name, for instances that
//! have not read its playlist: `seg_00042.ts` is followed by
//! `seg_00043.ts`.

/// The most digits a segment number may have.
const MAX_DIGITS: usize = 12;

/// The most extensions [`Extensions`] holds, and the longest one.
const MAX_EXTENSIONS: usize = 16;
const MAX_EXTENSION_LEN: usize = 8;

/// The file extensions (lower case, without the dot) that mark a segment.
#[derive(Debug, Clone)]
pub struct Extensions(Vec<String>);

impl Default for Extensions {
    /// MPEG-TS, fMP4/CMAF and packed audio segments.
    fn default() -> Extensions {
        Extensions(vec!["ts".into(), "m4s".into(), "aac".into()])
    }
}

impl Extensions {
    /// A comma-separated list (`ts,m4s`): at most 16, each 1 to 8 ASCII
    /// letters or digits. `Err` says what is wrong.
    pub fn parse(list: &str) -> Result<Extensions, String> {
        let extensions: Vec<String> = list
            .split(',')
            .map(|e| e.trim().trim_start_matches('.').to_ascii_lowercase())
            .collect();
        let valid = |e: &String| {
            (1..=MAX_EXTENSION_LEN).contains(&e.len())
                && e.bytes().all(|b| b.is_ascii_alphanumeric())
        };
        if extensions.len() > MAX_EXTENSIONS || !extensions.iter().all(valid) {
            return Err(format!(
                "extensions: {list:?} is not a list of at most {MAX_EXTENSIONS} extensions \
                 of 1 to {MAX_EXTENSION_LEN} letters or digits"
            ));
        }
        Ok(Extensions(extensions))
    }

    fn contains(&self, extension: &str) -> bool {
        self.0.iter().any(|e| e.eq_ignore_ascii_case(extension))
    }
}

/// The `n` targets after `target` if its file name is a number right
/// before a segment extension (`seg_00042.ts`, `segment42.m4s`, `7.aac`),
/// the query kept and the number's zero padding too; empty otherwise.
/// Only the digits right before the extension count: in `chunk-5-720p.ts`
/// the `720` is a rendition, not a position, so it is left alone.
pub fn next_targets(target: &str, n: usize, extensions: &Extensions) -> Vec<String> {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let file_start = path.rfind('/').map_or(0, |i| i + 1);
    let Some(dot) = path[file_start..].rfind('.').map(|i| file_start + i) else {
        return Vec::new();
    };
    let (stem, extension) = (&path[..dot], &path[dot + 1..]);
    if !extensions.contains(extension) {
        return Vec::new();
    }
    let digits_start = stem
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    let digits = &stem[digits_start..];
    if digits.is_empty() || digits.len() > MAX_DIGITS {
        return Vec::new();
    }
    let Ok(number) = digits.parse::<u64>() else {
        return Vec::new();
    };
    let prefix = &stem[..digits_start];
    let width = digits.len();
    (1..=n as u64)
        .map_while(|i| number.checked_add(i))
        .map(|next| {
            let mut next = format!("{prefix}{next:0width$}.{extension}");
            if let Some(query) = query {
                next.push('?');
                next.push_str(query);
            }
            next
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next(target: &str, n: usize) -> Vec<String> {
        next_targets(target, n, &Extensions::default())
    }

    #[test]
    fn the_number_before_the_extension_counts_up_keeping_its_padding() {
        assert_eq!(
            next("/v/seg_00042.ts", 3),
            ["/v/seg_00043.ts", "/v/seg_00044.ts", "/v/seg_00045.ts"]
        );
        assert_eq!(
            next("/v/segment9.m4s", 2),
            ["/v/segment10.m4s", "/v/segment11.m4s"]
        );
        assert_eq!(next("/v/seg_099.ts", 1), ["/v/seg_100.ts"]);
        assert_eq!(
            next("/a/7.AAC?token=x", 1),
            ["/a/8.AAC?token=x"],
            "the query is kept"
        );
        assert_eq!(
            next("/1080/42.ts", 1),
            ["/1080/43.ts"],
            "digits of a directory do not join"
        );
        assert_eq!(next("/v/chunk-5-42.ts", 1), ["/v/chunk-5-43.ts"]);
    }

    #[test]
    fn other_names_guess_nothing() {
        for target in [
            "/v/chunk-5-720p.ts",
            "/v/intro.ts",
            "/v/seg42.mp4",
            "/v/seg42",
            "/v.42/seg",
            "/v/seg42.ts.bak",
            "/v/1234567890123.ts",
            "",
            "/",
            "/.ts",
        ] {
            assert!(next(target, 3).is_empty(), "{target:?}");
        }
        assert_eq!(next("/v/999999999999.ts", 1), ["/v/1000000000000.ts"]);
        assert!(next("/v/seg1.ts", 0).is_empty());
    }

    #[test]
    fn extensions_are_configurable_and_checked() {
        let mp4 = Extensions::parse(" .MP4, m4v ").unwrap();
        assert_eq!(next_targets("/v/s1.mp4", 1, &mp4), ["/v/s2.mp4"]);
        assert!(next_targets("/v/s1.ts", 1, &mp4).is_empty());
        for bad in ["", "ts,", "t s", "averylongext", &["ts"; 17].join(",")] {
            assert!(Extensions::parse(bad).is_err(), "{bad:?}");
        }
    }
}
