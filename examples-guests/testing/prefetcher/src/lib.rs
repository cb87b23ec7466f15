//! Test guest: prefetches what the origin tells it to, so the end-to-end
//! tests can drive every path of the host's prefetcher.
//!
//! - `on-request`: each `x-test-hint` request header value becomes an
//!   Early Hints link.
//! - `on-response`: each comma-separated target in the origin's
//!   `x-prefetch` header is prefetched; `x-prefetch-burst: N` prefetches
//!   `/burst/0` … `/burst/N-1`. The results go back in the response header
//!   `x-prefetch-result` (`ok` or the refusal, per target, or the counts
//!   `queued=Q refused=R` for a burst). `x-want-body: N` asks for the body
//!   (up to N bytes); `x-prefetch-then-loop` prefetches its targets and then
//!   never returns, so the deadline stops it.
//! - `on-hit`: a hit on `/seg/<n>` prefetches `/seg/<n+1>`.
//! - `on-body`: each line of the body that starts with `/` is prefetched.
use stavka_policy::prefetch::{early_hint, fetch, want_body};
use stavka_policy::{
    export_policy, Entry, HitDecision, Policy, Request, RequestOutcome, Response, ResponseOutcome,
};

struct Prefetcher;

impl Policy for Prefetcher {
    fn on_request(req: &Request) -> RequestOutcome {
        if let Some(hints) = req.header("x-test-hint") {
            for link in hints.split(" | ") {
                early_hint(link);
            }
        }
        RequestOutcome::lookup()
    }

    fn on_response(_req: &Request, resp: &Response) -> ResponseOutcome {
        let mut results = Vec::new();
        if let Some(targets) = resp.header("x-prefetch") {
            for target in targets.split(',').map(str::trim) {
                results.push(match fetch(target) {
                    Ok(()) => "ok".to_owned(),
                    Err(refusal) => refusal.as_str().to_owned(),
                });
            }
        }
        if let Some(n) = resp
            .header("x-prefetch-burst")
            .and_then(|n| n.parse::<u32>().ok())
        {
            let (mut queued, mut refused) = (0, 0);
            for i in 0..n {
                match fetch(&format!("/burst/{i}")) {
                    Ok(()) => queued += 1,
                    Err(_) => refused += 1,
                }
            }
            results.push(format!("queued={queued} refused={refused}"));
        }
        if let Some(n) = resp.header("x-want-body").and_then(|n| n.parse().ok()) {
            want_body(n);
        }
        if resp.header("x-prefetch-then-loop").is_some() {
            #[allow(clippy::empty_loop)]
            loop {}
        }
        let outcome = ResponseOutcome::default();
        if results.is_empty() {
            outcome
        } else {
            outcome.set_header("x-prefetch-result", &results.join(", "))
        }
    }

    fn on_hit(req: &Request, _entry: &Entry) -> HitDecision {
        let path = req.path();
        if let Some(n) = path
            .strip_prefix("/seg/")
            .and_then(|n| n.parse::<u64>().ok())
        {
            let _ = fetch(&format!("/seg/{}", n + 1));
        }
        HitDecision::Serve
    }

    fn on_body(_req: &Request, _resp: &Response, body: &[u8]) {
        for line in String::from_utf8_lossy(body).lines() {
            if line.starts_with('/') {
                let _ = fetch(line.trim());
            }
        }
    }
}

export_policy!(Prefetcher);
