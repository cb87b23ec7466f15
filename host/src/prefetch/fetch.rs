//! Sending one prefetch to this proxy over its internal Unix socket.

use std::path::PathBuf;
use std::time::Duration;

use http::{header, Request};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use super::lane::Job;
use super::{Outcome, HEADER};

/// How long a prefetch may take in all, body included: a slow origin
/// holds a fetch slot at most this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// What a prefetch came to.
pub struct Fetched {
    /// Stored, already cached, not stored, or failed (a 5xx).
    pub outcome: Outcome,
    /// Body bytes received.
    pub bytes: u64,
    /// How long the stored object stays fresh, when it was stored or found
    /// stored (the `ttl` of the Cache-Status member).
    pub fresh_for: Option<Duration>,
}

/// Why a prefetch got no answer.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The internal socket refused the connection.
    #[error("cannot connect to {socket}: {source}")]
    Connect {
        socket: String,
        source: std::io::Error,
    },
    /// HTTP failed on the connection.
    #[error(transparent)]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error(transparent)]
    Request(#[from] http::Error),
    /// No answer within [`FETCH_TIMEOUT`].
    #[error("no answer within {} s", FETCH_TIMEOUT.as_secs())]
    Timeout,
}

/// Sends prefetches to the proxy's internal socket, marked with the token.
pub struct Client {
    socket: PathBuf,
    token: Box<str>,
}

impl Client {
    pub(super) fn new(socket: PathBuf, token: Box<str>) -> Client {
        Client { socket, token }
    }

    /// Fetch `job` through the proxy, reading (and dropping) the body so
    /// the cache stores all of it.
    ///
    /// # Cancel safety
    /// Cancelling drops the connection; the proxy treats it as a client
    /// that went away (a collapsed fill goes on for its other readers).
    pub async fn fetch(&self, job: &Job) -> Result<Fetched, FetchError> {
        match tokio::time::timeout(FETCH_TIMEOUT, self.exchange(job)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout),
        }
    }

    async fn exchange(&self, job: &Job) -> Result<Fetched, FetchError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| FetchError::Connect {
                    socket: self.socket.display().to_string(),
                    source,
                })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let driving = tokio::spawn(connection);
        let mut request = Request::get(job.target.as_str())
            .header(header::HOST, &*job.host)
            .header(HEADER, format!("{} {}", self.token, job.depth));
        for (name, value) in &job.headers {
            request = request.header(name, value);
        }
        let response = sender
            .send_request(request.body(Empty::<Bytes>::new())?)
            .await;
        let result = async {
            let response = response?;
            let (outcome, fresh_for) = outcome(response.status(), response.headers());
            let mut body = response.into_body();
            let mut bytes = 0u64;
            while let Some(frame) = body.frame().await {
                if let Some(data) = frame?.data_ref() {
                    bytes += data.len() as u64;
                }
            }
            Ok(Fetched {
                outcome,
                bytes,
                fresh_for,
            })
        }
        .await;
        driving.abort();
        result
    }
}

/// What the proxy's answer says became of the prefetch, and for how long
/// what it stored stays fresh: its own Cache-Status member is the last
/// (RFC 9211 §2: the cache nearest the client comes last), `ttl` its
/// remaining freshness (§2.7).
fn outcome(status: http::StatusCode, headers: &http::HeaderMap) -> (Outcome, Option<Duration>) {
    if status.is_server_error() {
        return (Outcome::Failed, None);
    }
    let ours = headers
        .get_all("cache-status")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next_back()
        .unwrap_or("");
    let params: Vec<&str> = ours.split(';').map(str::trim).collect();
    let outcome = if params.contains(&"hit") {
        Outcome::AlreadyCached
    } else if params.contains(&"stored") {
        Outcome::Fetched
    } else {
        return (Outcome::NotStored, None);
    };
    let fresh_for = params
        .iter()
        .find_map(|p| p.strip_prefix("ttl=")?.parse::<u64>().ok())
        .map(Duration::from_secs);
    (outcome, fresh_for)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(status: u16, cache_status: &str) -> Outcome {
        let mut headers = http::HeaderMap::new();
        headers.insert("cache-status", cache_status.parse().unwrap());
        outcome(http::StatusCode::from_u16(status).unwrap(), &headers).0
    }

    #[test]
    fn rfc9211_ttl_is_how_long_it_stays_fresh() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "cache-status",
            "stavka; fwd=uri-miss; fwd-status=200; ttl=60; stored"
                .parse()
                .unwrap(),
        );
        let (_, fresh) = outcome(http::StatusCode::OK, &headers);
        assert_eq!(fresh, Some(Duration::from_secs(60)));
        headers.insert("cache-status", "stavka; hit; ttl=-3".parse().unwrap());
        assert_eq!(outcome(http::StatusCode::OK, &headers).1, None, "stale");
    }

    #[test]
    fn rfc9211_the_last_entry_is_this_caches() {
        assert_eq!(with(200, "stavka; fwd=uri-miss; stored"), Outcome::Fetched);
        assert_eq!(with(200, "stavka; hit; ttl=30"), Outcome::AlreadyCached);
        assert_eq!(
            with(200, "shield; hit, stavka; fwd=uri-miss; stored"),
            Outcome::Fetched
        );
        assert_eq!(
            with(200, "stavka; fwd=uri-miss; detail=no-store"),
            Outcome::NotStored
        );
        assert_eq!(with(502, "stavka; fwd=uri-miss"), Outcome::Failed);
    }
}
