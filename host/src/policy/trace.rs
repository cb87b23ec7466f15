//! What one hook call depended on, as the host saw it through its imports:
//! the fields it read, and whether it used anything else (a clock, the
//! key-value store, a counter, the log, randomness). A call that used
//! nothing else is a pure function of the fields it read.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{HeaderMap, HeaderName};
use rand::rngs::StdRng;
use rand::{SeedableRng, TryRng};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

use super::request::RequestView;

/// A field of the request, or of the response or entry, a call can read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    /// The request method.
    Method,
    /// The scheme the client spoke.
    Scheme,
    /// The Host.
    Host,
    /// The path.
    Path,
    /// The query string.
    Query,
    /// The client's address.
    ClientAddr,
    /// A request header field.
    RequestHeader(HeaderName),
    /// A response (or cached entry) header field.
    ResponseHeader(HeaderName),
}

/// The fields a 0.1 guest gets whole in its request record, in order.
pub const RECORD_FIELDS: [Field; 6] = [
    Field::Method,
    Field::Scheme,
    Field::Host,
    Field::Path,
    Field::Query,
    Field::ClientAddr,
];

impl Field {
    /// This field's value in `request` and `response`: header fields with
    /// several lines are joined with ", ".
    pub fn value(
        &self,
        request: Option<RequestView<'_>>,
        response: Option<&HeaderMap>,
    ) -> Option<String> {
        self.value_ref(request, response).map(Cow::into_owned)
    }

    /// [`Field::value`], borrowed where it can be.
    pub fn value_ref<'a>(
        &self,
        request: Option<RequestView<'a>>,
        response: Option<&'a HeaderMap>,
    ) -> Option<Cow<'a, str>> {
        let req = request;
        match self {
            Field::Method => req.map(|r| Cow::Borrowed(r.method)),
            Field::Scheme => req.map(|r| Cow::Borrowed(r.scheme)),
            Field::Host => req.map(|r| Cow::Borrowed(r.host)),
            Field::Path => req.map(|r| Cow::Borrowed(r.path)),
            Field::Query => req.and_then(|r| r.query).map(Cow::Borrowed),
            Field::ClientAddr => req
                .and_then(|r| r.client_addr)
                .map(|ip| Cow::Owned(ip.to_string())),
            Field::RequestHeader(name) => joined(req.map(|r| r.headers), name),
            Field::ResponseHeader(name) => joined(response, name),
        }
    }

    /// The field a guest names as a header, case-insensitively (`Cookie`
    /// and `cookie` are one input); `None` for a name no header field can
    /// have, which reads as absent and so decides nothing.
    pub fn header(response: bool, name: &str) -> Option<Field> {
        let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
        Some(if response {
            Field::ResponseHeader(name)
        } else {
            Field::RequestHeader(name)
        })
    }
}

fn joined<'a>(headers: Option<&'a HeaderMap>, name: &HeaderName) -> Option<Cow<'a, str>> {
    let mut values = headers?
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let first = values.next()?;
    Some(values.fold(Cow::Borrowed(first), |mut all, v| {
        let all_mut = all.to_mut();
        all_mut.push_str(", ");
        all_mut.push_str(v);
        all
    }))
}

/// The fields one call read, with the values it got, in order.
pub type Reads = Vec<(Field, Option<String>)>;

/// Set when a call uses something besides its fields. Shared between an
/// instance's host state and the WASI clocks, random sources and output
/// streams it was given, which set it too.
#[derive(Debug, Clone, Default)]
pub struct Impurity(Arc<AtomicBool>);

impl Impurity {
    /// The call used something besides its fields.
    pub fn mark(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether it did since the last `take`; clears it.
    pub fn take(&self) -> bool {
        self.0.swap(false, Ordering::Relaxed)
    }
}

/// WASI's wall clock, marking the call that reads it.
pub struct WallClock(pub Impurity);

impl HostWallClock for WallClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(1)
    }

    fn now(&self) -> std::time::Duration {
        self.0.mark();
        wall_now()
    }
}

/// WASI's monotonic clock, marking the call that reads it.
pub struct MonotonicClock(pub Impurity);

impl HostMonotonicClock for MonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        self.0.mark();
        monotonic_now()
    }
}

/// Wall-clock time since the Unix epoch: what WASI's wall clock and
/// `host.wall-clock-ms` read.
pub fn wall_now() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Nanoseconds since the first reading in this process: what WASI's
/// monotonic clock and `host.monotonic-ns` read, so the two agree.
pub fn monotonic_now() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}

/// A WASI random source (a ChaCha generator seeded by the OS), marking the
/// call that draws from it.
pub struct Random {
    impurity: Impurity,
    rng: StdRng,
}

impl Random {
    /// A new generator reporting to `impurity`.
    pub fn new(impurity: Impurity) -> Random {
        Random {
            impurity,
            rng: StdRng::from_rng(&mut rand::rng()),
        }
    }
}

impl TryRng for Random {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        self.impurity.mark();
        self.rng.try_next_u32()
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        self.impurity.mark();
        self.rng.try_next_u64()
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.impurity.mark();
        self.rng.try_fill_bytes(dst)
    }
}
