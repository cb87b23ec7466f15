//! Per-path TTL overrides and query-string normalisation in the cache key.
//!
//! - `/static/**`: stored for a day whatever the origin says, tagged `static`.
//! - `/api/**`: never stored.
//! - `/news/**`: one minute fresh, then served stale for five while it revalidates.
//! - everywhere: tracking parameters (`utm_*`, `fbclid`, `gclid`) are dropped
//!   from the cache key and the rest are sorted, so `?b=2&a=1&utm_source=x`
//!   and `?a=1&b=2` share one entry. The origin is asked for the same
//!   normalised target: a parameter the key ignores must never reach an
//!   origin that could reflect it into the shared entry.
//!
//! Stateless: run it per request.

use stavka_policy::{
    days, export_policy, minutes, path_matches, HookSet, Policy, Request, RequestOutcome, Response,
    ResponseOutcome,
};

struct TtlRules;

const TRACKING: &[&str] = &["utm_*", "fbclid", "gclid"];

impl Policy for TtlRules {
    // No `on_hit`: hits are served without calling into the module.
    const HOOKS: HookSet = HookSet::ON_REQUEST.union(HookSet::ON_RESPONSE);

    fn on_request(req: &Request) -> RequestOutcome {
        RequestOutcome::lookup_normalized(req, TRACKING)
    }

    fn on_response(req: &Request, resp: &Response) -> ResponseOutcome {
        if path_matches("/api/**", req.path()) {
            return ResponseOutcome::no_store();
        }
        if resp.status != 200 {
            return ResponseOutcome::default();
        }
        if path_matches("/static/**", req.path()) {
            return ResponseOutcome::store(days(1))
                .tag("static")
                .set_header("x-policy-ttl", "86400");
        }
        if path_matches("/news/**", req.path()) {
            return ResponseOutcome::store(minutes(1))
                .stale_while_revalidate(minutes(5))
                .set_header("x-policy-ttl", "60");
        }
        ResponseOutcome::default()
    }
}

export_policy!(TtlRules);

#[cfg(test)]
mod tests {
    use super::*;
    use stavka_policy::testing::{self, request, response};
    use stavka_policy::{RequestDecision, ResponseDecision};

    #[test]
    fn static_is_kept_a_day_and_the_api_never() {
        let css = TtlRules::on_response(&request("GET", "/static/app.css"), &response(200));
        assert!(
            matches!(&css.decision, ResponseDecision::Store(s) if s.ttl_seconds == 86_400 && s.tags == ["static"])
        );
        let api = TtlRules::on_response(&request("GET", "/api/users"), &response(200));
        assert!(matches!(api.decision, ResponseDecision::NoStore));
        let missing = TtlRules::on_response(&request("GET", "/static/x"), &response(404));
        assert!(matches!(missing.decision, ResponseDecision::Default));
    }

    #[test]
    fn tracking_parameters_stay_out_of_the_key() {
        let outcome = TtlRules::on_request(&request("GET", "/news/a?utm_source=x&b=2&a=1"));
        let RequestDecision::Lookup(lookup) = outcome.decision else {
            panic!("a lookup");
        };
        assert_eq!(lookup.cache_key.as_deref(), Some("/news/a?a=1&b=2"));
    }

    #[test]
    fn the_key_depends_on_the_path_and_query_alone() {
        testing::reset();
        TtlRules::on_request(&request("GET", "/a?b=2"));
        assert_eq!(testing::request_reads(), ["query", "path"]);
    }
}
