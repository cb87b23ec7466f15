//! Responses this proxy writes itself: unknown hosts and origin failures.

use bytes::Bytes;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// Write a complete plain-text response with our `Cache-Status`.
pub async fn respond(
    session: &mut Session,
    status: u16,
    body: String,
    cache_status: &str,
) -> Result<()> {
    let headers = [(
        "content-type".to_owned(),
        "text/plain; charset=utf-8".to_owned(),
    )];
    respond_with(session, status, &headers, Bytes::from(body), cache_status).await
}

/// Write a complete response: `headers`, then ours (length, `no-store`
/// unless `headers` set Cache-Control, `Cache-Status`), then `body`. Closes
/// the connection afterwards.
pub async fn respond_with(
    session: &mut Session,
    status: u16,
    headers: &[(String, String)],
    body: Bytes,
    cache_status: &str,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(headers.len() + 3))?;
    for (name, value) in headers {
        resp.append_header(name.clone(), value.as_str())?;
    }
    resp.insert_header("content-length", body.len())?;
    if !resp.headers.contains_key("cache-control") {
        resp.insert_header("cache-control", "no-store")?;
    }
    resp.insert_header("cache-status", cache_status)?;
    let head_only = session.req_header().method == http::Method::HEAD;
    session.set_keepalive(None);
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// The status to answer for an error, and a short kind for metrics and
/// `Cache-Status` detail. Status 0 means the client is gone: answer nothing.
pub fn error_status(e: &Error) -> (u16, &'static str) {
    match (e.etype(), e.esource()) {
        (ErrorType::HTTPStatus(code), _) => (*code, "status"),
        (ErrorType::CustomCode(kind, code), _) => (*code, kind),
        (ErrorType::ConnectTimedout | ErrorType::TLSHandshakeTimedout, ErrorSource::Upstream) => {
            (504, "origin-connect-timeout")
        }
        (ErrorType::ReadTimedout | ErrorType::WriteTimedout, ErrorSource::Upstream) => {
            (504, "origin-timeout")
        }
        (ErrorType::ConnectRefused, ErrorSource::Upstream) => (502, "origin-refused"),
        (ErrorType::ConnectNoRoute, ErrorSource::Upstream) => (502, "origin-unreachable"),
        (ErrorType::ConnectionClosed, ErrorSource::Upstream) => (502, "origin-closed"),
        (_, ErrorSource::Upstream) => (502, "origin-error"),
        (
            ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
            ErrorSource::Downstream,
        ) => (0, "client-gone"),
        (_, ErrorSource::Downstream) => (400, "bad-request"),
        _ => (500, "internal-error"),
    }
}

/// A body that tells an operator what happened without leaking internals.
pub fn error_body(code: u16, kind: &str, site: &str) -> String {
    let what = match kind {
        "origin-connect-timeout" => "the origin did not accept the connection in time",
        "origin-timeout" => "the origin did not answer in time",
        "origin-refused" => "the origin refused the connection",
        "origin-unreachable" => "the origin is unreachable",
        "origin-closed" => "the origin closed the connection",
        "origin-error" => "the origin failed",
        "bad-request" => "the request could not be read",
        "policy-failed" => "the site's cache policy failed",
        _ => "the request failed",
    };
    format!("stavka: {what} (site {site}, status {code})\n")
}
