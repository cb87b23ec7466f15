//! Responses this proxy writes itself: unknown hosts, origin failures and
//! policies' synthetic answers.

use bytes::Bytes;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use crate::cache::status::{CacheStatus, Detail};
use crate::error_kind::ErrorKind;
use crate::hop_by_hop;
use crate::policy::Synthetic;

/// Write a complete plain-text response with our `Cache-Status`.
pub async fn respond(
    session: &mut Session,
    status: u16,
    body: String,
    cache_status: &str,
) -> Result<()> {
    respond_with(
        session,
        status,
        &[plain_text()],
        Bytes::from(body),
        cache_status,
    )
    .await
}

/// The `Content-Type` of the proxy's own plain-text answers.
pub fn plain_text() -> (String, String) {
    (
        "content-type".to_owned(),
        "text/plain; charset=utf-8".to_owned(),
    )
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
    for (name, value) in headers
        .iter()
        .filter(|(n, _)| !hop_by_hop::is_proxy_managed(n))
    {
        resp.append_header(name.clone(), value.as_str())?;
    }
    // RFC 9110 §8.6, §15.3.5, §15.4.5: 204 and 304 have no body and no length.
    let bodiless = matches!(status, 204 | 304);
    if !bodiless {
        resp.insert_header("content-length", body.len())?;
    }
    if !resp.headers.contains_key("cache-control") {
        resp.insert_header("cache-control", "no-store")?;
    }
    resp.insert_header("cache-status", cache_status)?;
    let head_only = bodiless || session.req_header().method == http::Method::HEAD;
    session.set_keepalive(None);
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Answer with a policy's synthetic response; returns what `Cache-Status` said.
pub async fn respond_synthetic(
    session: &mut Session,
    synthetic: &Synthetic,
    cache_name: &str,
) -> Result<CacheStatus> {
    let status = CacheStatus {
        detail: Some(Detail::PolicyResponse),
        ..CacheStatus::default()
    };
    respond_with(
        session,
        synthetic.status,
        &synthetic.headers,
        Bytes::copy_from_slice(&synthetic.body),
        &status.render(cache_name),
    )
    .await?;
    Ok(status)
}

/// A body that tells an operator what happened without leaking internals.
pub fn error_body(code: u16, kind: ErrorKind, site: &str) -> String {
    format!("stavka: {} (site {site}, status {code})\n", kind.explain())
}
