//! Test guest: a decision that reads the key-value store, which must never
//! be memoised. `on-request` reads the path and the entry `value` (`-`
//! when absent), and looks up under `<path>?kv=<value>` (so the origin is
//! asked for that target; give it URL-safe values) with the origin headers
//! `x-memo-kv: <value>` and, as every memo guest sets it,
//! `x-memo-path: <path>`. The host must call the module for every request:
//! once an operator changes `value`, the next request must be decided on
//! the new one, not get a decision reused from before.
use stavka_policy::{export_policy, kv, HookSet, Policy, Request, RequestOutcome};
struct MemoKv;
impl Policy for MemoKv {
    const HOOKS: HookSet = HookSet::ON_REQUEST;
    fn on_request(req: &Request) -> RequestOutcome {
        let value = kv("value").unwrap_or_else(|| "-".to_owned());
        RequestOutcome::lookup_key(format!("{}?kv={value}", req.path()))
            .set_origin_header("x-memo-kv", &value)
            .set_origin_header("x-memo-path", req.path())
    }
}
export_policy!(MemoKv);
