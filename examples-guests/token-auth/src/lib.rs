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
    mac.update(format!("{}?expires={expires}", req.path).as_bytes());
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
        if !req.path.starts_with("/private/") {
            return RequestOutcome::lookup();
        }
        if signature_valid(req) || bearer_valid(req) {
            // The credentials are not part of the content: one entry per path.
            return RequestOutcome::lookup_key(req.path.clone())
                .remove_origin_header("authorization");
        }
        RequestOutcome::respond(Synthetic::text(
            403,
            "forbidden: a valid signature or token is required\n",
        ))
    }
}

export_policy!(TokenAuth);
