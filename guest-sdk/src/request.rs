//! The request a hook decides on, read from the host field by field.

use std::cell::{OnceCell, RefCell};
use std::fmt;

use crate::bindings::stavka::policy::incoming;

/// The request being decided on, borrowed from the host for one hook call.
///
/// Each field is asked of the host the first time it is read, and at most
/// once per hook call; a field the policy never reads is never asked for.
/// That is more than a saving: the host knows which fields a decision
/// read, and may give a later request that agrees on all of them the same
/// decision without calling the module (when the call used nothing else:
/// no clock, randomness, key-value store, counter, gauge, log line or rate
/// limit). So read only what the decision needs: a policy that looks at the
/// client address it does not use gets a decision per client.
///
/// The borrow ends with the hook call: a `Request` cannot be kept for a
/// later one. In tests, make one with [`testing::request`](crate::testing::request)
/// or [`testing::RequestBuilder`](crate::testing::RequestBuilder).
pub struct Request<'a> {
    source: Source<'a>,
    method: OnceCell<String>,
    scheme: OnceCell<String>,
    host: OnceCell<String>,
    path: OnceCell<String>,
    query: OnceCell<Option<String>>,
    client_addr: OnceCell<Option<String>>,
    /// Header fields read so far, by lower-case name.
    headers: RefCell<Vec<(String, Option<String>)>>,
}

/// Where a request's fields come from.
enum Source<'a> {
    /// The host's request resource.
    Host(&'a incoming::Request),
    /// A request made by `testing`, answered by the host double.
    #[cfg(not(target_arch = "wasm32"))]
    Test(crate::testing::Fields),
}

/// One field of a request, as the host is asked for it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Field<'n> {
    Method,
    Scheme,
    Host,
    Path,
    Query,
    ClientAddr,
    /// A header field, by lower-case name.
    Header(&'n str),
}

impl Source<'_> {
    fn read(&self, field: Field) -> Option<String> {
        match self {
            Source::Host(req) => match field {
                Field::Method => Some(req.method()),
                Field::Scheme => Some(req.scheme()),
                Field::Host => Some(req.host()),
                Field::Path => Some(req.path()),
                Field::Query => req.query(),
                Field::ClientAddr => req.client_addr(),
                Field::Header(name) => req.header(name),
            },
            #[cfg(not(target_arch = "wasm32"))]
            Source::Test(fields) => crate::testing::read(fields, field),
        }
    }
}

impl<'a> Request<'a> {
    fn new(source: Source<'a>) -> Request<'a> {
        Request {
            source,
            method: OnceCell::new(),
            scheme: OnceCell::new(),
            host: OnceCell::new(),
            path: OnceCell::new(),
            query: OnceCell::new(),
            client_addr: OnceCell::new(),
            headers: RefCell::new(Vec::new()),
        }
    }

    /// The host's request, for [`export_policy!`](crate::export_policy):
    /// nothing is read until a hook asks.
    #[doc(hidden)]
    pub fn __from_host(req: &'a incoming::Request) -> Request<'a> {
        Request::new(Source::Host(req))
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn from_test(fields: crate::testing::Fields) -> Request<'static> {
        Request::new(Source::Test(fields))
    }

    /// `GET`, `POST`, ...
    pub fn method(&self) -> &str {
        self.method
            .get_or_init(|| self.source.read(Field::Method).unwrap_or_default())
    }

    /// The scheme the client spoke to the proxy: `http` or `https`.
    pub fn scheme(&self) -> &str {
        self.scheme
            .get_or_init(|| self.source.read(Field::Scheme).unwrap_or_default())
    }

    /// The Host, lower-case, without port.
    pub fn host(&self) -> &str {
        self.host
            .get_or_init(|| self.source.read(Field::Host).unwrap_or_default())
    }

    /// The path, percent-encoded as received.
    pub fn path(&self) -> &str {
        self.path
            .get_or_init(|| self.source.read(Field::Path).unwrap_or_default())
    }

    /// The query string without `?`, if there was one.
    pub fn query(&self) -> Option<&str> {
        self.query
            .get_or_init(|| self.source.read(Field::Query))
            .as_deref()
    }

    /// The client's IP address, if known. A decision that reads it is a
    /// decision per client: read it only when the decision depends on it.
    pub fn client_addr(&self) -> Option<&str> {
        self.client_addr
            .get_or_init(|| self.source.read(Field::ClientAddr))
            .as_deref()
    }

    /// A header field of this request (its lines joined with ", "); the
    /// name is matched without regard to case.
    pub fn header(&self, name: &str) -> Option<String> {
        let name = name.to_ascii_lowercase();
        if let Some((_, value)) = self.headers.borrow().iter().find(|(n, _)| *n == name) {
            return value.clone();
        }
        let value = self.source.read(Field::Header(&name));
        self.headers.borrow_mut().push((name, value.clone()));
        value
    }

    /// The first value of a query parameter, percent-decoding not applied.
    /// Reads the query.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query()?
            .split('&')
            .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// A cookie's value from the `Cookie` header. Reads that header.
    pub fn cookie(&self, name: &str) -> Option<String> {
        let cookies = self.header("cookie")?;
        cookies
            .split(';')
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
    }

    /// The path with its query normalised: parameters sorted, and those
    /// matching `drop` removed (`utm_*` drops every name starting `utm_`).
    /// A good cache key when parameter order or tracking parameters do not
    /// change the response. Reads the path and the query.
    pub fn normalized_path_and_query(&self, drop: &[&str]) -> String {
        match self.query().map(|q| crate::normalize_query(q, drop)) {
            Some(q) if !q.is_empty() => format!("{}?{q}", self.path()),
            _ => self.path().to_owned(),
        }
    }
}

/// Shows the fields read so far, and reads nothing.
impl fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Request");
        let fields: [(&str, Option<&dyn fmt::Debug>); 6] = [
            ("method", self.method.get().map(|v| v as _)),
            ("scheme", self.scheme.get().map(|v| v as _)),
            ("host", self.host.get().map(|v| v as _)),
            ("path", self.path.get().map(|v| v as _)),
            ("query", self.query.get().map(|v| v as _)),
            ("client_addr", self.client_addr.get().map(|v| v as _)),
        ];
        for (name, value) in fields {
            if let Some(value) = value {
                s.field(name, value);
            }
        }
        s.field("headers", &self.headers.borrow());
        s.finish_non_exhaustive()
    }
}
