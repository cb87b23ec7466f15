//! A per-client request budget: each client address may make `requests`
//! requests per `window_seconds` (both from `[init]`, default 100 per 60 s);
//! beyond that it gets `429` with `Retry-After`.
//!
//! Long-lived: the counts live in the instance. Each pooled instance keeps
//! its own counts, so the budget is enforced per instance — a soft limit
//! that costs no coordination. The host runs at most `instances` instances,
//! so with `instances = 1` (and `failure = "closed"`) the limit is exact.

use std::cell::RefCell;
use std::collections::HashMap;

use stavka_policy::{
    counter, export_policy, gauge, now_ms, HookSet, Policy, Request, RequestOutcome, Synthetic,
};

struct ClientBudget;

struct State {
    requests: u32,
    window_ms: u64,
    clients: HashMap<String, (u64, u32)>,
}

/// Beyond this many tracked clients, expired windows are swept.
const SWEEP_AT: usize = 10_000;

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State { requests: 100, window_ms: 60_000, clients: HashMap::new() });
}

impl Policy for ClientBudget {
    const HOOKS: HookSet = HookSet::ON_REQUEST;

    fn init(config: &[(String, String)]) -> Result<(), String> {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            for (key, value) in config {
                let n: u64 = value
                    .parse()
                    .map_err(|_| format!("{key}: {value:?} is not a number"))?;
                match key.as_str() {
                    "requests" => s.requests = n as u32,
                    "window_seconds" => s.window_ms = n * 1000,
                    other => return Err(format!("unknown init key {other:?}")),
                }
            }
            Ok(())
        })
    }

    fn on_request(req: &Request) -> RequestOutcome {
        let client = req.client_addr.clone().unwrap_or_default();
        let now = now_ms();
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            let (requests, window_ms) = (s.requests, s.window_ms);
            if s.clients.len() > SWEEP_AT {
                s.clients.retain(|_, (start, _)| now - *start < window_ms);
            }
            let (start, used) = s.clients.entry(client).or_insert((now, 0));
            if now - *start >= window_ms {
                *start = now;
                *used = 0;
            }
            *used += 1;
            let over = *used > requests;
            let retry_after = (window_ms - (now - *start)).div_ceil(1000).max(1);
            gauge("tracked_clients", s.clients.len() as i64);
            if over {
                counter("rejected", 1);
                return RequestOutcome::respond(
                    Synthetic::text(429, "request budget exhausted\n")
                        .header("retry-after", &retry_after.to_string()),
                );
            }
            RequestOutcome::lookup()
        })
    }
}

export_policy!(ClientBudget);
