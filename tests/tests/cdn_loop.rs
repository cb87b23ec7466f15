//! Loop protection (RFC 8586): every request stavka forwards carries a
//! `CDN-Loop` entry naming this node, and a request that comes back to
//! the node it already passed through is refused with 508 (RFC 5842 §7.2)
//! instead of going round for ever.

use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use stavka_e2e::{client, default_site_at, Origin, Stavka};

/// An origin that answers with the `CDN-Loop` it was sent.
fn echo_loop() -> Router {
    Router::new().route(
        "/{*rest}",
        get(|headers: HeaderMap| async move {
            let seen = headers
                .get("cdn-loop")
                .map_or("-", |v| v.to_str().unwrap_or("?"))
                .to_owned();
            ([("cache-control", "no-store")], seen)
        }),
    )
}

#[tokio::test]
async fn forwarded_requests_name_this_node_and_a_loop_between_nodes_gets_508_rfc8586() {
    let origin = Origin::start(echo_loop()).await;
    let b = Stavka::start(&default_site_at(origin.addr, None)).await;
    // The origin sees B's entry after the client's own.
    let seen = client()
        .get(b.url("/x"))
        .header("cdn-loop", "othercdn")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // (Each process names itself uniquely unless `[shared] node_id` says.)
    assert!(seen.starts_with("othercdn, stavka; node=\""), "{seen}");

    // A in front of B, then B in front of A: a loop.
    let a = Stavka::start(&default_site_at(b.proxy, None)).await;
    let passed = a.get("/x").await;
    assert_eq!(passed.status, 200);
    assert_eq!(
        passed.text().matches("stavka; node=").count(),
        2,
        "A's entry, then B's: {}",
        passed.text()
    );
    let reloaded = b
        .reload_with(|c| c.replace(&origin.addr.to_string(), &a.proxy.to_string()))
        .await;
    assert_eq!(reloaded.status(), 200);

    let looped = a.get("/y").await;
    assert_eq!(looped.status, 508, "{}", looped.text());
    assert_eq!(origin.count("/y"), 0, "the loop never reached the origin");
}
