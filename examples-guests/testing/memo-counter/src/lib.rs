//! Test guest: a decision with an effect, which must never be memoised.
//! `on-request` reads the path, adds 1 to the counter `calls`
//! (`stavka_policy_guest_counter_total{module, name="calls"}`), and looks
//! up under the request's own key with the origin header
//! `x-memo-path: <path>`. The decision depends on the path alone, but the
//! counter must count every request: the host must call the module each
//! time, not reuse the decision.
use stavka_policy::{counter, export_policy, HookSet, Policy, Request, RequestOutcome};
struct MemoCounter;
impl Policy for MemoCounter {
    const HOOKS: HookSet = HookSet::ON_REQUEST;
    fn on_request(req: &Request) -> RequestOutcome {
        counter("calls", 1);
        RequestOutcome::lookup().set_origin_header("x-memo-path", req.path())
    }
}
export_policy!(MemoCounter);
