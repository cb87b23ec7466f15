//! Test guest: a pure decision, for the host's reuse of decisions
//! (memoisation). `on-request` reads the path and nothing else, and looks
//! up under `<path>?memo=pure` (so the origin is asked for that target;
//! a query the request had is ignored) with the origin header
//! `x-memo-path: <path>`. Its decision depends on the path alone and it
//! keeps no state, so it is safe to run long-lived or per request, and the
//! host may give every request for a path the decision of the first: a
//! reused decision is identical to a fresh one.
use stavka_policy::{export_policy, HookSet, Policy, Request, RequestOutcome};
struct MemoPure;
impl Policy for MemoPure {
    const HOOKS: HookSet = HookSet::ON_REQUEST;
    fn on_request(req: &Request) -> RequestOutcome {
        let path = req.path();
        RequestOutcome::lookup_key(format!("{path}?memo=pure"))
            .set_origin_header("x-memo-path", path)
    }
}
export_policy!(MemoPure);

#[cfg(test)]
mod tests {
    use super::*;
    use stavka_policy::testing::{self, RequestBuilder};
    use stavka_policy::RequestDecision;

    #[test]
    fn the_decision_reads_the_path_alone() {
        testing::reset();
        let req = RequestBuilder::new("GET", "/a?x=1")
            .client_addr("192.0.2.1")
            .build();
        let outcome = MemoPure::on_request(&req);
        assert_eq!(testing::request_reads(), ["path"]);
        let RequestDecision::Lookup(lookup) = outcome.decision else {
            panic!("a lookup");
        };
        assert_eq!(lookup.cache_key.as_deref(), Some("/a?memo=pure"));
        assert_eq!(
            outcome.origin_request.set,
            [("x-memo-path".to_owned(), "/a".to_owned())]
        );
    }
}
