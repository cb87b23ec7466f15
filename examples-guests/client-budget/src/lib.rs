//! A per-client request budget: each client address may make `requests`
//! requests per `window_seconds` (both from `[init]`, default 100 per 60 s);
//! beyond that it gets `429` with `Retry-After`.
//!
//! The budget is a token bucket in the host ([`stavka_policy::rate_limit`]),
//! one per client address: it holds `requests` tokens and refills at
//! `requests / window_seconds` a second, so a client may spend its whole
//! budget at once and then earns one request back every
//! `window_seconds / requests` seconds. The host shares each bucket among
//! every instance of the module on every thread, so the limit is exactly
//! the configured one whatever the pool size (`instances`). Requests
//! without a client address share one bucket.
//!
//! Long-lived, so that `init` reads the settings; the instances keep
//! nothing else. A call that takes a token is never reused for another
//! request: the host calls the module for every request.

use std::cell::Cell;

use stavka_policy::{
    counter, export_policy, rate_limit, HookSet, Policy, Request, RequestOutcome, Synthetic,
};

struct ClientBudget;

/// The budget: `requests` per `window_seconds`.
#[derive(Clone, Copy)]
struct Budget {
    requests: u32,
    window_seconds: u32,
}

impl Budget {
    /// Tokens earned back per second.
    fn per_second(self) -> f64 {
        f64::from(self.requests) / f64::from(self.window_seconds)
    }

    /// Seconds until a refused client has a token again (at most that).
    fn retry_after(self) -> u64 {
        (f64::from(self.window_seconds) / f64::from(self.requests)).ceil() as u64
    }
}

thread_local! {
    static BUDGET: Cell<Budget> = const {
        Cell::new(Budget { requests: 100, window_seconds: 60 })
    };
}

impl Policy for ClientBudget {
    const HOOKS: HookSet = HookSet::ON_REQUEST.union(HookSet::INIT);

    fn init(config: &[(String, String)]) -> Result<(), String> {
        let mut budget = BUDGET.get();
        for (key, value) in config {
            let n: u32 = value
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{key}: {value:?} is not a positive number"))?;
            match key.as_str() {
                "requests" => budget.requests = n,
                "window_seconds" => budget.window_seconds = n,
                other => return Err(format!("unknown init key {other:?}")),
            }
        }
        BUDGET.set(budget);
        Ok(())
    }

    fn on_request(req: &Request) -> RequestOutcome {
        let budget = BUDGET.get();
        let client = req.client_addr().unwrap_or_default();
        if rate_limit(client, budget.per_second(), budget.requests) {
            return RequestOutcome::lookup();
        }
        counter("rejected", 1);
        RequestOutcome::respond(
            Synthetic::text(429, "request budget exhausted\n")
                .header("retry-after", &budget.retry_after().max(1).to_string()),
        )
    }
}

export_policy!(ClientBudget);

#[cfg(test)]
mod tests {
    use super::*;
    use stavka_policy::testing::{self, RequestBuilder};
    use stavka_policy::RequestDecision;

    fn from(addr: &str) -> RequestOutcome {
        ClientBudget::on_request(&RequestBuilder::new("GET", "/").client_addr(addr).build())
    }

    fn refused(outcome: &RequestOutcome) -> Option<String> {
        match &outcome.decision {
            RequestDecision::Respond(s) if s.status == 429 => Some(
                s.headers
                    .iter()
                    .find(|(n, _)| n == "retry-after")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default(),
            ),
            _ => None,
        }
    }

    fn configure(requests: &str, window_seconds: &str) -> Result<(), String> {
        ClientBudget::init(&[
            ("requests".to_owned(), requests.to_owned()),
            ("window_seconds".to_owned(), window_seconds.to_owned()),
        ])
    }

    #[test]
    fn each_client_gets_the_budget_then_429_until_it_earns_one_back() {
        testing::reset();
        configure("3", "60").unwrap();
        for _ in 0..3 {
            assert_eq!(refused(&from("192.0.2.1")), None);
        }
        assert_eq!(refused(&from("192.0.2.1")).as_deref(), Some("20"));
        assert_eq!(refused(&from("192.0.2.2")), None, "another client");
        assert_eq!(testing::counter_value("rejected"), 1);
        testing::advance_ms(19_999);
        assert!(refused(&from("192.0.2.1")).is_some());
        testing::advance_ms(1);
        assert_eq!(refused(&from("192.0.2.1")), None, "one back after 20 s");
        assert!(refused(&from("192.0.2.1")).is_some());
    }

    #[test]
    fn the_decision_reads_only_the_client_address() {
        testing::reset();
        configure("100", "60").unwrap();
        from("192.0.2.1");
        assert_eq!(testing::request_reads(), ["client-addr"]);
    }

    #[test]
    fn retry_after_is_at_least_a_second() {
        testing::reset();
        configure("1000", "1").unwrap();
        for _ in 0..1000 {
            assert_eq!(refused(&from("192.0.2.1")), None);
        }
        assert_eq!(refused(&from("192.0.2.1")).as_deref(), Some("1"));
    }

    #[test]
    fn bad_settings_reject_the_module() {
        assert!(configure("0", "60").is_err());
        assert!(configure("10", "0").is_err());
        assert!(configure("ten", "60").is_err());
        assert!(ClientBudget::init(&[("burst".to_owned(), "1".to_owned())]).is_err());
    }
}
