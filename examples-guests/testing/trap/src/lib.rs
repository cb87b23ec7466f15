//! Test guest: panics (a trap) in `on-request`.
use stavka_policy::{export_policy, Policy, Request, RequestOutcome};
struct Trap;
impl Policy for Trap {
    fn on_request(req: &Request) -> RequestOutcome {
        panic!("policy bug on {}", req.path())
    }
}
export_policy!(Trap);
