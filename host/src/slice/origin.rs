//! Asking the origin for bytes of a sliced object.

use bytes::Bytes;
use http::header;
use pingora_core::connectors::http::Connector;
use pingora_core::protocols::http::client::HttpSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};

use super::range::{self, Span};

/// The request fields a slice fetch never forwards: the client's own
/// range and conditions are answered here, from the blocks.
const ANSWERED_HERE: [header::HeaderName; 6] = [
    header::RANGE,
    header::IF_RANGE,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
];

/// Where the origin is and what to ask it, as the proxy would.
pub struct Upstream {
    /// The site's origin, with its timeouts.
    pub peer: HttpPeer,
    /// The request the proxy would send (Host, target and policy edits
    /// applied); each fetch adds its own `Range`.
    pub request: RequestHeader,
    /// The site's count of requests sent to its origin.
    pub requests: prometheus::IntCounter,
    /// The site's origin response times (to the response header).
    pub latency: prometheus::Histogram,
}

/// What a fetch asks the origin for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// These bytes of the object.
    Span(Span),
    /// What the client asked, with its own `Range` and conditions: for a
    /// response passed through unchanged.
    AsClient,
}

/// An origin response being read.
pub struct Fetch {
    session: HttpSession,
    /// Its header, after interim (1xx) responses.
    pub header: ResponseHeader,
}

/// What an origin response says about the bytes it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carries {
    /// `206` with this `Content-Range`, complete length known.
    Part {
        /// The bytes in the body.
        span: Span,
        /// The object's complete length.
        length: u64,
    },
    /// `200`: the whole object (an origin that ignores `Range`), this
    /// long.
    Whole(u64),
    /// `416`: nothing, the object being this long.
    Unsatisfiable(u64),
    /// Anything else: not a part of the object this engine can use.
    Other,
}

impl Carries {
    /// What `header`, an origin's response header, says its body carries.
    pub fn of(resp: &ResponseHeader) -> Carries {
        let field = |name| resp.headers.get(name).map(|v| v.as_bytes());
        let length = || {
            std::str::from_utf8(field(header::CONTENT_LENGTH)?)
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        match resp.status.as_u16() {
            206 => match field(header::CONTENT_RANGE).and_then(range::content_range) {
                Some(range::ContentRange {
                    span,
                    complete: Some(length),
                }) => Carries::Part { span, length },
                _ => Carries::Other,
            },
            200 => length().map_or(Carries::Other, Carries::Whole),
            416 => field(header::CONTENT_RANGE)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().strip_prefix("bytes */"))
                .and_then(|n| n.parse().ok())
                .map_or(Carries::Other, Carries::Unsatisfiable),
            _ => Carries::Other,
        }
    }
}

impl Fetch {
    /// Send the request for `ask` and read the response header.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the connection, never reusing it.
    pub async fn start(connector: &Connector, upstream: &Upstream, ask: Ask) -> Result<Fetch> {
        Self::send(connector, upstream, ask)
            .await
            .map_err(|e| e.into_up())
    }

    async fn send(connector: &Connector, upstream: &Upstream, ask: Ask) -> Result<Fetch> {
        let mut request = upstream.request.clone();
        if let Ask::Span(span) = ask {
            // Blocks are bodies: a HEAD's probe asks for its first byte.
            request.set_method(http::Method::GET);
            for name in ANSWERED_HERE {
                request.remove_header(&name);
            }
            request.insert_header(header::RANGE, format!("bytes={}-{}", span.start, span.end))?;
        }
        upstream.requests.inc();
        let sent = std::time::Instant::now();
        let (mut session, _) = connector.get_http_session(&upstream.peer).await?;
        let options = &upstream.peer.options;
        session.set_read_timeout(options.read_timeout);
        session.set_write_timeout(options.write_timeout);
        session.write_request_header(Box::new(request)).await?;
        session.finish_request_body().await?;
        loop {
            session.read_response_header().await?;
            let header = session.response_header().ok_or_else(|| {
                Error::explain(ErrorType::InvalidHTTPHeader, "no response header")
            })?;
            if !header.status.is_informational() {
                upstream.latency.observe(sent.elapsed().as_secs_f64());
                let header = header.clone();
                return Ok(Fetch { session, header });
            }
        }
    }

    /// What the response carries.
    pub fn carries(&self) -> Carries {
        Carries::of(&self.header)
    }

    /// The next body bytes; `None` at the end.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropping it mid-read loses the connection's place.
    pub async fn next(&mut self) -> Result<Option<Bytes>> {
        self.session
            .read_response_body()
            .await
            .map_err(|e| e.into_up())
    }

    /// Done with it: a connection whose response was read to its end goes
    /// back to the pool, any other is closed.
    pub async fn release(mut self, connector: &Connector, upstream: &Upstream) {
        if self.session.response_done() {
            let idle = upstream.peer.options.idle_timeout;
            connector
                .release_http_session(self.session, &upstream.peer, idle)
                .await;
        } else {
            self.session.shutdown().await;
        }
    }
}
