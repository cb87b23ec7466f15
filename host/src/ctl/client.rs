//! One HTTP/1 exchange with the admin API per call, over hyper (already in
//! the tree for the server side), and the API's answers turned into one
//! line that says what to do about them.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::net::TcpStream;

use super::target::{Target, TOKEN_ENV};

/// How long to wait for the TCP connection: a local API accepts at once,
/// so anything longer is a wrong address or a firewall.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for a whole answer: a purge of many objects answers
/// only once done.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a call failed, each one line naming the address or the status.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// No TCP connection: nothing listens there, or it is filtered.
    #[error("cannot reach the admin API at {addr}: {reason}")]
    Unreachable {
        /// Where it was looked for.
        addr: String,
        /// The connect error.
        reason: String,
    },
    /// Connected, but no complete HTTP answer came back.
    #[error("the admin API at {addr} did not answer: {reason}")]
    NoAnswer {
        /// Where it was asked.
        addr: String,
        /// The protocol error or the timeout.
        reason: String,
    },
    /// 401 without a token: the API has one configured.
    #[error("the admin API at {addr} needs a token (401): pass --token or set {TOKEN_ENV}")]
    NeedsToken {
        /// Where it was asked.
        addr: String,
    },
    /// 401 or 403 with a token: it is not the configured one.
    #[error("the admin API refused the token ({status}): {message}")]
    RefusedToken {
        /// 401 or 403.
        status: u16,
        /// The API's error message.
        message: String,
    },
    /// Any other 4xx: the request named nothing, or was malformed.
    #[error("the admin API refused the request ({status}): {message}")]
    Refused {
        /// The status.
        status: u16,
        /// The API's error message.
        message: String,
    },
    /// 5xx or anything else unexpected.
    #[error("the admin API failed ({status}): {message}")]
    Failed {
        /// The status.
        status: u16,
        /// The API's error message, or the start of the body.
        message: String,
    },
}

/// A successful answer's body.
#[derive(Debug)]
pub struct Reply {
    body: Bytes,
}

impl Reply {
    /// The body as text (a key-value value is served as `text/plain`).
    pub fn text(&self) -> anyhow::Result<String> {
        String::from_utf8(self.body.to_vec())
            .map_err(|_| anyhow::anyhow!("the admin API answered with bytes that are not UTF-8"))
    }

    /// The body read as `T`, for the tables.
    pub fn json<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            anyhow::anyhow!("the admin API's answer is not what this ctl expects: {e}")
        })
    }

    /// The body as the server wrote it, indented and ending in a newline,
    /// for `--json`.
    pub fn pretty(&self) -> anyhow::Result<String> {
        serde_json::from_slice::<serde::de::IgnoredAny>(&self.body)
            .map_err(|e| anyhow::anyhow!("the admin API's answer is not JSON: {e}"))?;
        Ok(super::json::pretty(&self.text()?) + "\n")
    }
}

/// The API's error shape, `{"error": "..."}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

/// Talks to one admin API with one token.
#[derive(Debug)]
pub struct Client {
    target: Target,
}

impl Client {
    /// A client for `target`; nothing connects until a call.
    pub fn new(target: Target) -> Client {
        Client { target }
    }

    /// Where it connects, for messages.
    pub fn addr(&self) -> &str {
        &self.target.addr
    }

    /// `GET path` (with its query).
    pub async fn get(&self, path: &str) -> Result<Reply, Failure> {
        self.send(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> Result<Reply, Failure> {
        let body = ("application/json", Bytes::from(body.to_string()));
        self.send(Method::POST, path, Some(body)).await
    }

    /// `PUT path` with a text body.
    pub async fn put_text(&self, path: &str, text: String) -> Result<Reply, Failure> {
        let body = ("text/plain; charset=utf-8", Bytes::from(text));
        self.send(Method::PUT, path, Some(body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<Reply, Failure> {
        self.send(Method::DELETE, path, None).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Bytes)>,
    ) -> Result<Reply, Failure> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.target.addr);
        if let Some(token) = &self.target.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some((content_type, bytes)) => {
                request = request.header(header::CONTENT_TYPE, content_type);
                bytes
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(body))
            .map_err(|e| self.no_answer(format!("cannot build the request: {e}")))?;
        let (status, body) = self.exchange(request).await?;
        if status.is_success() {
            return Ok(Reply { body });
        }
        Err(self.failure(status, &body))
    }

    /// Connect, send, and read the whole answer, each within its timeout.
    async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), Failure> {
        let unreachable = |reason: String| Failure::Unreachable {
            addr: self.target.addr.clone(),
            reason,
        };
        let stream = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect(&self.target.addr),
        )
        .await
        {
            Err(_) => {
                return Err(unreachable(format!(
                    "no connection within {} s",
                    CONNECT_TIMEOUT.as_secs()
                )))
            }
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Ok(Ok(stream)) => stream,
        };
        let answer = async {
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            let driving = tokio::spawn(connection);
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            driving.abort();
            Ok::<_, hyper::Error>((status, body))
        };
        match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
            Err(_) => {
                Err(self.no_answer(format!("no answer within {} s", ANSWER_TIMEOUT.as_secs())))
            }
            Ok(Err(e)) => Err(self.no_answer(e.to_string())),
            Ok(Ok(answer)) => Ok(answer),
        }
    }

    fn no_answer(&self, reason: String) -> Failure {
        Failure::NoAnswer {
            addr: self.target.addr.clone(),
            reason,
        }
    }

    /// The failure an unsuccessful status stands for, with the API's
    /// message (or, from something that is not the API, the start of
    /// what it said).
    fn failure(&self, status: StatusCode, body: &[u8]) -> Failure {
        let message = match serde_json::from_slice::<ErrorBody>(body) {
            Ok(e) => e.error,
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let line = text.lines().next().unwrap_or("").trim();
                if line.is_empty() {
                    status.canonical_reason().unwrap_or("no message").to_owned()
                } else {
                    line.chars().take(200).collect()
                }
            }
        };
        let code = status.as_u16();
        match (status, &self.target.token) {
            (StatusCode::UNAUTHORIZED, None) => Failure::NeedsToken {
                addr: self.target.addr.clone(),
            },
            (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, Some(_)) => Failure::RefusedToken {
                status: code,
                message,
            },
            _ if status.is_client_error() => Failure::Refused {
                status: code,
                message,
            },
            _ => Failure::Failed {
                status: code,
                message,
            },
        }
    }
}
