//! Test guest: a decision that reads the clock, which must never be
//! memoised. `on-request` reads the path and `now_ms()`, and looks up
//! under `<path>?now=<ms>` (so the origin is asked for that target) with
//! the origin headers `x-memo-now: <ms>` and, as every memo guest sets it,
//! `x-memo-path: <path>`: each call makes a new key, so every request
//! misses and the origin sees its time. The host must call the module for
//! every request; a reused decision would repeat an old time (and hit the
//! entry an earlier request stored).
use stavka_policy::{export_policy, now_ms, HookSet, Policy, Request, RequestOutcome};
struct MemoClock;
impl Policy for MemoClock {
    const HOOKS: HookSet = HookSet::ON_REQUEST;
    fn on_request(req: &Request) -> RequestOutcome {
        let now = now_ms().to_string();
        RequestOutcome::lookup_key(format!("{}?now={now}", req.path()))
            .set_origin_header("x-memo-now", &now)
            .set_origin_header("x-memo-path", req.path())
    }
}
export_policy!(MemoClock);
