//! Test guest: a decision that logs, which must never be memoised.
//! `on-request` reads the path, logs `memo-log saw <path>` at info, and
//! looks up under the request's own key with the origin header
//! `x-memo-path: <path>`. The decision depends on the path alone, but every
//! request must write its line: the host must call the module each time,
//! not reuse the decision.
use stavka_policy::{export_policy, log, HookSet, Level, Policy, Request, RequestOutcome};
struct MemoLog;
impl Policy for MemoLog {
    const HOOKS: HookSet = HookSet::ON_REQUEST;
    fn on_request(req: &Request) -> RequestOutcome {
        log(Level::Info, &format!("memo-log saw {}", req.path()));
        RequestOutcome::lookup().set_origin_header("x-memo-path", req.path())
    }
}
export_policy!(MemoLog);
