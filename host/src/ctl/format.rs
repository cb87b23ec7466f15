//! How figures read in tables: sizes in binary units, ratios as percents,
//! durations in the largest units that fit, and `-` where the API has no
//! value (no lookups yet, no origin requests yet).

use bytesize::ByteSize;

/// `1.5 KiB`.
pub fn bytes(n: u64) -> String {
    ByteSize(n).display().iec().to_string()
}

/// `1.5 KiB/s`.
pub fn bytes_per_second(n: f64) -> String {
    format!("{}/s", bytes(n.max(0.0).round() as u64))
}

/// `12.3/s`.
pub fn per_second(n: f64) -> String {
    format!("{n:.1}/s")
}

/// `87.5%`, or `-` without lookups.
pub fn ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

/// `12.3 ms`, or `-` without origin requests.
pub fn millis(ms: Option<f64>) -> String {
    ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1} ms"))
}

/// `42s`, `3m12s`, `2h03m`, `4d02h`: ages and freshness left.
pub fn seconds(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// The cell for an absent text value.
pub fn or_dash(s: Option<&str>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or("-").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_people_write_them() {
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(ratio(Some(0.875)), "87.5%");
        assert_eq!(ratio(None), "-");
        assert_eq!(seconds(59), "59s");
        assert_eq!(seconds(192), "3m12s");
        assert_eq!(seconds(7380), "2h03m");
        assert_eq!(seconds(180000), "2d02h");
    }
}
