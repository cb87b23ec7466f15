//! Interim responses (RFC 9110 §15.2): an origin's `103 Early Hints`
//! (RFC 8297) reaches the client before the final response, through the
//! cache's miss path and with a policy deciding the request, and only the
//! final response is stored.

use std::time::Duration;

use stavka_e2e::{default_site_at, raw_get, Stavka};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An origin that answers every request with a 103 carrying a preload
/// link, then a cacheable 200; it counts the requests it answered.
async fn hinting_origin() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = tcp
                    .write_all(b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload; as=style\r\n\r\n")
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 4\r\nconnection: close\r\n\r\npage")
                    .await;
            });
        }
    });
    (addr, served)
}

#[tokio::test]
async fn an_origins_103_reaches_the_client_first_and_only_the_final_response_is_stored_rfc8297() {
    let (origin, served) = hinting_origin().await;
    for policy in [None, Some("ttl-rules")] {
        let site = default_site_at(origin, policy.map(|_| "p"));
        let stavka = match policy {
            None => Stavka::start(&site).await,
            Some(guest) => {
                Stavka::start_with_modules(
                    &site,
                    &[("p", guest, "mode = \"long-lived\"\nmemo = true\n")],
                )
                .await
            }
        };
        let before = served.load(std::sync::atomic::Ordering::SeqCst);
        let first = raw_get(stavka.proxy, "/page", "1.1", "").await;
        let hint = first
            .find("HTTP/1.1 103")
            .unwrap_or_else(|| panic!("{policy:?}: no 103 in {first:?}"));
        let fin = first
            .find("HTTP/1.1 200")
            .unwrap_or_else(|| panic!("{policy:?}: no 200 in {first:?}"));
        assert!(hint < fin, "{policy:?}: the 103 comes first: {first:?}");
        assert!(
            first[hint..fin]
                .to_ascii_lowercase()
                .contains("link: </style.css>"),
            "{first:?}"
        );
        assert!(first.ends_with("page"), "{first:?}");
        // The stored response is the final one: a hit, without a 103.
        let second = raw_get(stavka.proxy, "/page", "1.1", "").await;
        assert!(second.starts_with("HTTP/1.1 200"), "{policy:?}: {second:?}");
        assert!(
            second
                .to_ascii_lowercase()
                .contains("cache-status: stavka; hit"),
            "{second:?}"
        );
        assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), before + 1);
        if policy.is_some() {
            // The policy decided the final response only, not the 103.
            let calls = "stavka_policy_calls_total{hook=\"on-response\",module=\"p\"}";
            assert_eq!(stavka.metric(calls).await, Some(1.0));
        }
    }
}
