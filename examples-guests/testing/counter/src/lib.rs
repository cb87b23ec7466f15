//! Test guest: answers every request with how many requests this instance
//! has seen, so a test can tell per-request from long-lived instances.
use stavka_policy::{export_policy, Policy, Request, RequestOutcome, Synthetic};
use std::sync::atomic::{AtomicU64, Ordering};
static SEEN: AtomicU64 = AtomicU64::new(0);
struct Counter;
impl Policy for Counter {
    fn on_request(_req: &Request) -> RequestOutcome {
        let n = SEEN.fetch_add(1, Ordering::Relaxed) + 1;
        RequestOutcome::respond(Synthetic::text(200, &n.to_string()))
    }
}
export_policy!(Counter);
