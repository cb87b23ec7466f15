//! The request a policy decides on, as the host holds it for every hook
//! call of one request.

use std::net::IpAddr;

use http::HeaderMap;

/// One request's fields, read by 0.2 guests through the `request`
/// resource and lowered whole as a record for 0.1 guests.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The scheme the client spoke to the proxy.
    pub scheme: String,
    /// The Host, lower-case, without port.
    pub host: String,
    /// The path, percent-encoded as received.
    pub path: String,
    /// The query string without `?`.
    pub query: Option<String>,
    /// The client's IP address.
    pub client_addr: Option<IpAddr>,
    /// The request's header fields.
    pub headers: HeaderMap,
}

/// The host side of a 0.2 guest's `borrow<request>`: every call has one
/// request, the one in its store's call input, so the handle carries
/// nothing.
pub struct RequestHandle;

/// A request's fields, borrowed: what deciding from kept decisions reads,
/// so a request answered that way copies nothing.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The scheme the client spoke to the proxy.
    pub scheme: &'a str,
    /// The Host, lower-case, without port.
    pub host: &'a str,
    /// The path, percent-encoded as received.
    pub path: &'a str,
    /// The query string without `?`.
    pub query: Option<&'a str>,
    /// The client's IP address, written out only for a guest or a kept
    /// decision that reads it.
    pub client_addr: Option<IpAddr>,
    /// The request's header fields.
    pub headers: &'a HeaderMap,
}

impl Request {
    /// This request, borrowed.
    pub fn view(&self) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            scheme: &self.scheme,
            host: &self.host,
            path: &self.path,
            query: self.query.as_deref(),
            client_addr: self.client_addr,
            headers: &self.headers,
        }
    }
}

impl RequestView<'_> {
    /// An owned copy, for a call that enters the guest.
    pub fn to_request(&self) -> Request {
        Request {
            method: self.method.to_owned(),
            scheme: self.scheme.to_owned(),
            host: self.host.to_owned(),
            path: self.path.to_owned(),
            query: self.query.map(str::to_owned),
            client_addr: self.client_addr,
            headers: self.headers.clone(),
        }
    }
}
