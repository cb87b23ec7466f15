//! Test guest: the decisions the examples do not make.
//! - `/bypass`: on-request bypasses the cache.
//! - `/device`: looked up with the `x-device` request header as extra variance.
//! - `/revalidate`: on-hit revalidates every entry found.
use stavka_policy::{export_policy, Entry, HitDecision, Policy, Request, RequestOutcome};
struct Decisions;
impl Policy for Decisions {
    fn on_request(req: &Request) -> RequestOutcome {
        match req.path() {
            "/bypass" => RequestOutcome::bypass(),
            "/device" => {
                RequestOutcome::lookup().vary_on(req.header("x-device").unwrap_or_default())
            }
            _ => RequestOutcome::lookup(),
        }
    }
    fn on_hit(req: &Request, _entry: &Entry) -> HitDecision {
        if req.path() == "/revalidate" {
            HitDecision::Revalidate
        } else {
            HitDecision::Serve
        }
    }
}
export_policy!(Decisions);
