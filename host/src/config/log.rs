//! `[log]`: log output — the process's own lines and the access log.

use serde::Deserialize;

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// How the process's own lines are written: `text` or `json`. The level
    /// comes from `RUST_LOG` (default `info`).
    pub format: LogFormat,
    /// One line per request. Default `true`; `false` turns the access log
    /// off whatever `access_format` says.
    pub access_log: bool,
    /// How access lines are written; unset, they follow `format` (as they
    /// did before access lines had a format of their own).
    pub access_format: Option<AccessFormat>,
    /// The fraction of requests, in (0, 1], whose line is written, chosen
    /// at random per request; errors are always written. Default 1.
    pub access_sample: f64,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: LogFormat::Text,
            access_log: true,
            access_format: None,
            access_sample: 1.0,
        }
    }
}

impl Log {
    /// The format access lines are written in: `access_format`, or the
    /// process's `format` when it is unset.
    pub fn access_format(&self) -> AccessFormat {
        self.access_format.unwrap_or(match self.format {
            LogFormat::Text => AccessFormat::Text,
            LogFormat::Json => AccessFormat::Json,
        })
    }

    /// Problems with the values, each naming its field.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let sample = self.access_sample;
        if sample > 0.0 && sample <= 1.0 {
            Vec::new()
        } else {
            vec![(
                "access_sample",
                format!("{sample} is not a fraction of requests in (0, 1]; access_log = false logs none"),
            )]
        }
    }
}

/// How the process's own log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// How access lines are written: as `tracing` events among the process's
/// lines, or as lines log tools parse as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessFormat {
    /// `tracing` text lines on stderr, target `stavka::access`.
    Text,
    /// `tracing` JSON objects on stderr, target `stavka::access`.
    Json,
    /// nginx's `combined` format plus a quoted `Cache-Status`, alone on
    /// stdout, so log tools read the stream as it is.
    Combined,
}

impl AccessFormat {
    /// The name used in the configuration, for the startup log line.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessFormat::Text => "text",
            AccessFormat::Json => "json",
            AccessFormat::Combined => "combined",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn log(text: &str) -> Log {
        Config::from_toml(&format!("[log]\n{text}")).unwrap().log
    }

    #[test]
    fn access_lines_follow_format_unless_told() {
        assert_eq!(log("").access_format(), AccessFormat::Text);
        assert_eq!(log("format = \"json\"").access_format(), AccessFormat::Json);
        let split = log("format = \"json\"\naccess_format = \"combined\"");
        assert_eq!(split.format, LogFormat::Json);
        assert_eq!(split.access_format(), AccessFormat::Combined);
        assert_eq!(
            log("access_format = \"json\"").access_format(),
            AccessFormat::Json
        );
    }

    #[test]
    fn access_sample_is_a_fraction() {
        for ok in ["1", "1.0", "0.5", "0.0001"] {
            assert!(
                log(&format!("access_sample = {ok}")).problems().is_empty(),
                "{ok}"
            );
        }
        for bad in ["0", "0.0", "-0.5", "1.5", "nan", "inf"] {
            let problems = log(&format!("access_sample = {bad}")).problems();
            assert_eq!(problems.len(), 1, "{bad}");
            assert_eq!(problems[0].0, "access_sample");
        }
    }

    #[test]
    fn a_bad_sample_names_the_field() {
        let e = Config::from_toml("[log]\naccess_sample = 0\n")
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(e.0[0].path, "log.access_sample");
        assert!(Config::from_toml("[log]\naccess_format = \"clf\"\n").is_err());
    }
}
