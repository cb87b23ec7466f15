//! Test guest: never returns from `on-request`. The host must stop it at its deadline.
use stavka_policy::{export_policy, Policy, Request, RequestOutcome};
struct Looping;
impl Policy for Looping {
    fn on_request(req: &Request) -> RequestOutcome {
        let mut n = 0u64;
        loop {
            n = n.wrapping_add(req.path().len() as u64);
            std::hint::black_box(n);
        }
    }
}
export_policy!(Looping);
