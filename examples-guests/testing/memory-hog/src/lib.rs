//! Test guest: allocates without bound in `on-request`. The host's memory cap must stop it.
use stavka_policy::{export_policy, Policy, Request, RequestOutcome};
struct Hog;
impl Policy for Hog {
    fn on_request(_req: &Request) -> RequestOutcome {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![1u8; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}
export_policy!(Hog);
