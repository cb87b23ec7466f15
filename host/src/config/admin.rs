//! `[admin]`: access to the admin API.

use std::net::SocketAddr;

use serde::Deserialize;

/// Access to the admin API.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Admin {
    /// The bearer token the admin API requires. Prefer `token_env`, which
    /// keeps it out of the file. Required (here or in the environment)
    /// whenever `listen.admin` is not on loopback.
    pub token: Option<String>,
    /// The environment variable read for the token when `token` is unset.
    /// Default `STAVKA_ADMIN_TOKEN`.
    pub token_env: String,
    /// Serve `/metrics` without the token, for scrapers. Default `true`.
    pub metrics_public: bool,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            token: None,
            token_env: "STAVKA_ADMIN_TOKEN".to_owned(),
            metrics_public: true,
        }
    }
}

impl Admin {
    /// Shortest token accepted: a guessable token is no protection.
    pub const MIN_TOKEN_LEN: usize = 16;

    /// The token from the file, else from the environment.
    pub fn token(&self) -> Option<String> {
        self.token
            .clone()
            .or_else(|| std::env::var(&self.token_env).ok())
            .filter(|t| !t.is_empty())
    }

    /// Problems with the values, each naming its field, for an admin API
    /// listening on `listen`.
    pub fn problems(&self, listen: SocketAddr) -> Vec<(&'static str, String)> {
        match self.token() {
            Some(t) if t.chars().filter(|c| !c.is_whitespace()).count() < Admin::MIN_TOKEN_LEN => {
                vec![(
                    "token",
                    format!(
                        "must have at least {} characters that are not whitespace",
                        Admin::MIN_TOKEN_LEN
                    ),
                )]
            }
            None if !listen.ip().is_loopback() => vec![(
                "token",
                format!(
                    "required because listen.admin ({listen}) is not on loopback; set it, or the {} environment variable",
                    self.token_env
                ),
            )],
            _ => Vec::new(),
        }
    }
}
