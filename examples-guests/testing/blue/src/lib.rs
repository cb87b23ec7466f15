//! Test guest: answers every request with "blue", for hot-swap tests.
use stavka_policy::{export_policy, Policy, Request, RequestOutcome, Synthetic};
struct Colour;
impl Policy for Colour {
    fn on_request(_req: &Request) -> RequestOutcome {
        RequestOutcome::respond(Synthetic::text(200, "blue"))
    }
}
export_policy!(Colour);
