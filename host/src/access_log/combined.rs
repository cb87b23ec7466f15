//! nginx's `combined` log format with the `Cache-Status` appended:
//!
//! ```text
//! $remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" "$cache_status"
//! ```
//!
//! Quoted values are escaped as nginx escapes them (`"`, `\`, control bytes
//! and bytes from 0x7F up as `\xHH`), so no client-chosen byte ends a field
//! or a line early.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{HeaderName, REFERER, USER_AGENT};

use super::Entry;

/// `entry` as one combined line, ending in `\n`, logged at `now` (UTC).
/// The user is always `-`: stavka authenticates no one.
pub fn line(entry: &Entry<'_>, cache_name: &str, now: SystemTime) -> Vec<u8> {
    let req = entry.request;
    let mut out = Vec::with_capacity(256);
    // As nginx's realip module does: the client a trusted edge named.
    let client = entry
        .forwarded_for
        .or_else(|| entry.client.and_then(|a| a.as_inet()).map(|a| a.ip()));
    match client {
        Some(ip) => {
            let _ = write!(out, "{ip}");
        }
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" - - [");
    local_time(&mut out, now);
    out.extend_from_slice(b"] \"");
    escape(&mut out, req.method.as_str().as_bytes());
    out.push(b' ');
    escape(&mut out, req.raw_path());
    let _ = write!(
        out,
        " {:?}\" {:03} {} ",
        req.version, entry.status, entry.bytes
    );
    quoted(&mut out, header(entry, &REFERER));
    out.push(b' ');
    quoted(&mut out, header(entry, &USER_AGENT));
    out.push(b' ');
    let cache_status = entry.cache_status.map(|s| s.render(cache_name));
    quoted(&mut out, cache_status.as_deref().map(str::as_bytes));
    out.push(b'\n');
    out
}

/// The first value of request header `name`, as sent.
fn header<'a>(entry: &Entry<'a>, name: &HeaderName) -> Option<&'a [u8]> {
    entry.request.headers.get(name).map(|v| v.as_bytes())
}

/// `value` in double quotes, escaped; `"-"` when there is none.
fn quoted(out: &mut Vec<u8>, value: Option<&[u8]>) {
    out.push(b'"');
    match value {
        Some(value) => escape(out, value),
        None => out.push(b'-'),
    }
    out.push(b'"');
}

/// `bytes` with `"`, `\`, control bytes and bytes from 0x7F up written as
/// `\xHH`, as nginx's default `escape`: what remains is printable ASCII
/// that cannot close a quoted field or start a new line.
pub fn escape(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if !(0x20..0x7F).contains(&b) || b == b'"' || b == b'\\' {
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        } else {
            out.push(b);
        }
    }
}

/// `now` as `$time_local`, in UTC: `30/Nov/2026:01:02:03 +0000`.
fn local_time(out: &mut Vec<u8>, now: SystemTime) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (year, month, day) = civil(secs / 86_400);
    let time = secs % 86_400;
    let _ = write!(
        out,
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[month as usize - 1],
        time / 3600,
        time / 60 % 60,
        time % 60
    );
}

/// The proleptic Gregorian (year, month 1..=12, day 1..=31) of a count of
/// days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr as StdSocketAddr;
    use std::time::Duration;

    use pingora_core::protocols::l4::socket::SocketAddr;
    use pingora_http::RequestHeader;

    use super::*;
    use crate::cache::outcome::Outcome;
    use crate::cache::status::{CacheStatus, Fwd};

    fn escaped(bytes: &[u8]) -> String {
        let mut out = Vec::new();
        escape(&mut out, bytes);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_what_could_end_a_field_or_a_line() {
        assert_eq!(escaped(b"curl/8.5 (x; y)"), "curl/8.5 (x; y)");
        assert_eq!(escaped(b"a\"b"), r"a\x22b");
        assert_eq!(escaped(b"a\\b"), r"a\x5Cb");
        assert_eq!(escaped(b"a\nb\r\t\x00\x1b"), r"a\x0Ab\x0D\x09\x00\x1B");
        assert_eq!(escaped(b"\x7f\xff\xfe"), r"\x7F\xFF\xFE");
        // U+2028 LINE SEPARATOR, and a lone continuation byte (not UTF-8).
        assert_eq!(escaped("\u{2028}".as_bytes()), r"\xE2\x80\xA8");
        assert_eq!(escaped(b"/\x80"), r"/\x80");
        // A forged second field or line stays inside the first.
        assert_eq!(
            escaped(b"x\" 200 1 \"-\"\n1.2.3.4 - - ["),
            r"x\x22 200 1 \x22-\x22\x0A1.2.3.4 - - ["
        );
    }

    #[test]
    fn time_is_nginx_time_local_in_utc() {
        let at = |secs: u64| {
            let mut out = Vec::new();
            local_time(&mut out, UNIX_EPOCH + Duration::from_secs(secs));
            String::from_utf8(out).unwrap()
        };
        assert_eq!(at(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(at(1_796_000_523), "30/Nov/2026:01:02:03 +0000");
        assert_eq!(at(951_782_400), "29/Feb/2000:00:00:00 +0000");
        // Every day for ~400 years agrees with httpdate's IMF-fixdate.
        for day in (0..146_097u64).step_by(7) {
            let secs = day * 86_400 + 45_296;
            let http = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
            let (d, m, y, t) = (&http[5..7], &http[8..11], &http[12..16], &http[17..25]);
            assert_eq!(at(secs), format!("{d}/{m}/{y}:{t} +0000"), "{http}");
        }
    }

    #[test]
    fn a_whole_line() {
        let mut req = RequestHeader::build("GET", b"/a?b=1", None).unwrap();
        req.insert_header("user-agent", "curl/8.5").unwrap();
        let client = SocketAddr::Inet("127.0.0.1:5555".parse::<StdSocketAddr>().unwrap());
        let status = CacheStatus {
            hit: true,
            ttl: Some(42),
            ..CacheStatus::default()
        };
        let entry = Entry {
            request: &req,
            client: Some(&client),
            forwarded_for: None,
            site: "www",
            host: "example.com",
            status: 200,
            cache_status: Some(&status),
            outcome: Outcome::Hit,
            bytes: 1024,
            elapsed: Duration::ZERO,
            origin_ttfb: None,
            error: None,
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_796_000_523);
        assert_eq!(
            String::from_utf8(line(&entry, "stavka", now)).unwrap(),
            "127.0.0.1 - - [30/Nov/2026:01:02:03 +0000] \"GET /a?b=1 HTTP/1.1\" 200 1024 \"-\" \"curl/8.5\" \"stavka; hit; ttl=42\"\n"
        );
    }

    #[test]
    fn hostile_request_stays_one_line_of_nine_fields() {
        let mut req = RequestHeader::build("GET", b"/x\"y\\z\xff", None).unwrap();
        req.insert_header("referer", "\" \"").unwrap();
        req.insert_header(
            "user-agent",
            http::HeaderValue::from_bytes(b"evil\" 200 1 \"-\" \"x\xe2\x80\xa8\xc2\x85").unwrap(),
        )
        .unwrap();
        let status = CacheStatus {
            fwd: Some(Fwd::Miss),
            fwd_status: Some(200),
            ..CacheStatus::default()
        };
        let entry = Entry {
            request: &req,
            client: None,
            forwarded_for: None,
            site: "-",
            host: "-",
            status: 0,
            cache_status: Some(&status),
            outcome: Outcome::Miss,
            bytes: 0,
            elapsed: Duration::ZERO,
            origin_ttfb: None,
            error: None,
        };
        let line = String::from_utf8(line(&entry, "stavka", UNIX_EPOCH)).unwrap();
        assert_eq!(
            line,
            concat!(
                r#"- - - [01/Jan/1970:00:00:00 +0000] "GET /x\x22y\x5Cz\xFF HTTP/1.1" 000 0 "#,
                r#""\x22 \x22" "evil\x22 200 1 \x22-\x22 \x22x\xE2\x80\xA8\xC2\x85" "stavka; fwd=miss; fwd-status=200""#,
                "\n"
            )
        );
        assert_eq!(line.matches('"').count(), 8, "four quoted fields");
    }
}
