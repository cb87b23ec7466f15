//! Stop serving cached objects that an operator lists, without the origin
//! deleting or renaming them: a takedown at the edge.
//!
//! The key-value entry `blocked` holds one path pattern per line (`*` within
//! a segment, `**` across segments). A cached entry whose path matches is
//! answered with the status from the `[init]` table (`status`, default 451)
//! instead of being served.
//!
//! Long-lived: the parsed list is kept between requests and re-parsed only
//! when the key-value entry changes.

use std::cell::RefCell;

use stavka_policy::{
    counter, export_policy, kv, path_matches, Entry, HitDecision, HookSet, Policy, Request,
    Synthetic,
};

struct Blocklist;

#[derive(Default)]
struct State {
    status: u16,
    raw: String,
    patterns: Vec<String>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State { status: 451, ..State::default() });
}

impl Policy for Blocklist {
    const HOOKS: HookSet = HookSet::ON_HIT.union(HookSet::INIT);

    fn init(config: &[(String, String)]) -> Result<(), String> {
        for (key, value) in config {
            match key.as_str() {
                "status" => {
                    let status: u16 = value
                        .parse()
                        .map_err(|_| format!("status: {value:?} is not a number"))?;
                    STATE.with(|s| s.borrow_mut().status = status);
                }
                other => return Err(format!("unknown init key {other:?}")),
            }
        }
        Ok(())
    }

    fn on_hit(req: &Request, _entry: &Entry) -> HitDecision {
        let raw = kv("blocked").unwrap_or_default();
        STATE.with(|state| {
            let mut state = state.borrow_mut();
            if state.raw != raw {
                state.patterns = raw
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect();
                state.raw = raw;
            }
            if state.patterns.iter().any(|p| path_matches(p, req.path())) {
                counter("blocked_hits", 1);
                return HitDecision::Respond(Synthetic::text(
                    state.status,
                    "this content is not available here\n",
                ));
            }
            HitDecision::Serve
        })
    }
}

export_policy!(Blocklist);
