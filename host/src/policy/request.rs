//! The request a policy decides on, as the host holds it for every hook
//! call of one request.

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
    pub client_addr: Option<String>,
    /// The request's header fields.
    pub headers: HeaderMap,
}

/// The host side of a 0.2 guest's `borrow<request>`: every call has one
/// request, the one in its store's call input, so the handle carries
/// nothing.
pub struct RequestHandle;
