//! Access control at the edge: requests under `/private/` need either a
//! signed URL or a bearer token; everything else passes.
//!
//! - Signed URL: `?expires=<unix seconds>&sig=<hex>` where `sig` is
//!   HMAC-SHA256 of `<path>?expires=<expires>` under the key-value entry
//!   `secret`, and `expires` is in the future.
//! - Bearer token: `Authorization: Bearer <t>` where `<t>` is one of the
//!   comma-separated tokens in the key-value entry `tokens`.
//!
//! Anything else gets `403`. Allowed requests are looked up under the path
//! alone, so every holder of a valid signature shares one cache entry.
//! Stateless: run it per request.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use stavka_policy::{
    export_policy, kv, now_ms, HookSet, Policy, Request, RequestOutcome, Synthetic,
};

struct TokenAuth;

fn signature_valid(req: &Request) -> bool {
    let (Some(expires), Some(sig), Some(secret)) = (
        req.query_param("expires"),
        req.query_param("sig"),
        kv("secret"),
    ) else {
        return false;
    };
    let Ok(expires_at) = expires.parse::<u64>() else {
        return false;
    };
    if expires_at.saturating_mul(1000) < now_ms() {
        return false;
    }
    let Ok(sig) = hex::decode(sig) else {
        return false;
    };
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("{}?expires={expires}", req.path()).as_bytes());
    mac.verify_slice(&sig).is_ok()
}

fn bearer_valid(req: &Request) -> bool {
    let (Some(auth), Some(tokens)) = (req.header("authorization"), kv("tokens")) else {
        return false;
    };
    let Some(token) = auth.strip_prefix("Bearer ") else {
        return false;
    };
    tokens
        .split(',')
        .map(str::trim)
        .any(|t| !t.is_empty() && t == token)
}

impl Policy for TokenAuth {
    const HOOKS: HookSet = HookSet::ON_REQUEST;

    fn on_request(req: &Request) -> RequestOutcome {
        if !req.path().starts_with("/private/") {
            return RequestOutcome::lookup();
        }
        if signature_valid(req) || bearer_valid(req) {
            // The credentials are not part of the content: one entry per path.
            return RequestOutcome::lookup_key(req.path()).remove_origin_header("authorization");
        }
        RequestOutcome::respond(Synthetic::text(
            403,
            "forbidden: a valid signature or token is required\n",
        ))
    }
}

export_policy!(TokenAuth);

#[cfg(test)]
mod tests {
    use super::*;
    use stavka_policy::testing::{self, request, RequestBuilder};
    use stavka_policy::RequestDecision;

    fn denied(outcome: &RequestOutcome) -> bool {
        matches!(&outcome.decision, RequestDecision::Respond(s) if s.status == 403)
    }

    #[test]
    fn a_bearer_token_from_the_store_opens_private_paths() {
        testing::reset();
        testing::kv_put("tokens", "alpha, beta");
        let with_token = |token: &str| {
            RequestBuilder::new("GET", "/private/doc")
                .header("authorization", &format!("Bearer {token}"))
                .build()
        };
        assert!(denied(&TokenAuth::on_request(&request(
            "GET",
            "/private/doc"
        ))));
        assert!(!denied(&TokenAuth::on_request(&with_token("beta"))));
        assert!(denied(&TokenAuth::on_request(&with_token("gamma"))));
        assert!(!denied(&TokenAuth::on_request(&request("GET", "/public"))));
    }

    #[test]
    fn a_public_path_is_decided_on_the_path_alone() {
        testing::reset();
        TokenAuth::on_request(&request("GET", "/public?sig=x"));
        assert_eq!(testing::request_reads(), ["path"]);
    }

    #[test]
    fn a_signed_url_is_good_until_it_expires() {
        testing::reset();
        testing::kv_put("secret", "s3cret");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(b"/private/doc?expires=2000");
        let sig = hex::encode(mac.finalize().into_bytes());
        let target = format!("/private/doc?expires=2000&sig={sig}");
        testing::set_now_ms(1_999_000);
        assert!(!denied(&TokenAuth::on_request(&request("GET", &target))));
        testing::set_now_ms(2_001_000);
        assert!(denied(&TokenAuth::on_request(&request("GET", &target))));
    }
}
