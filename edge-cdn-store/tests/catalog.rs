//! The catalog: objects found by primary key (every Vary variant), prefix
//! and surrogate tag; kept right through purges, meta rewrites and restarts.

mod common;

use std::time::{Duration, SystemTime};

use common::{body, config, open, put_with};
use pingora_cache::key::{CacheHashKey, CacheKey};
use pingora_cache::storage::{PurgeTarget, PurgeType, Storage};
use pingora_cache::trace::Span;
use pingora_cache::CacheMeta;
use pingora_http::ResponseHeader;

fn tagged(surrogate_key: &str) -> CacheMeta {
    let mut header = ResponseHeader::build(200, None).unwrap();
    header
        .insert_header("surrogate-key", surrogate_key)
        .unwrap();
    let now = SystemTime::now();
    CacheMeta::new(now + Duration::from_secs(600), now, 0, 0, header)
}

fn variant(primary: &str, variance: Option<u8>) -> CacheKey {
    let mut key = CacheKey::new(primary, "site");
    if let Some(v) = variance {
        key.set_variance_key([v; 16]);
    }
    key
}

async fn names(
    store: &'static edge_cdn_store::TieredStore,
    selector: edge_cdn_store::Selector<'_>,
) -> Vec<String> {
    let mut out: Vec<String> = store
        .select(selector)
        .await
        .unwrap()
        .iter()
        .map(|l| String::from_utf8_lossy(&l.primary_key).into_owned())
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn selections_survive_a_restart_and_follow_purges_and_rewrites() {
    use edge_cdn_store::Selector::{Prefix, Primary, Tag};
    let dir = tempfile::tempdir().unwrap();
    let data = body(1000, 1);
    {
        let store = open(config(dir.path()));
        put_with(store, &variant("h/a", Some(1)), &tagged("red blue"), &data).await;
        put_with(store, &variant("h/a", Some(2)), &tagged("red"), &data).await;
        put_with(store, &variant("h/b", None), &tagged("blue"), &data).await;
        put_with(store, &variant("g/a", None), &tagged("red"), &data).await;
    }
    let store = open(config(dir.path()));
    let primary = variant("h/a", None).primary_bin();
    assert_eq!(names(store, Primary(&primary)).await, ["h/a", "h/a"]);
    assert_eq!(names(store, Prefix(b"h/")).await, ["h/a", "h/a", "h/b"]);
    assert_eq!(names(store, Tag("red")).await, ["g/a", "h/a", "h/a"]);
    assert_eq!(store.catalog_totals(), (4, 2));
    let listed = store.select(Tag("blue")).await.unwrap();
    assert!(listed.iter().all(|l| l.key.user_tag.as_ref() == "site"));

    // Purging one variant through the Storage interface drops it here too.
    let span = Span::inactive().handle();
    let one = variant("h/a", Some(1)).to_compact();
    store
        .purge(PurgeTarget::Active(&one), PurgeType::Invalidation, &span)
        .await
        .unwrap();
    assert_eq!(names(store, Primary(&primary)).await, ["h/a"]);
    assert_eq!(names(store, Tag("blue")).await, ["h/b"]);

    // A meta rewrite (a 304 refresh) retags.
    store
        .update_meta(&variant("h/b", None), &tagged("green"), &span)
        .await
        .unwrap();
    assert!(store.select(Tag("blue")).await.unwrap().is_empty());
    assert_eq!(names(store, Tag("green")).await, ["h/b"]);

    // Describe reports where the object is and what it holds.
    let listed = store.select(Tag("green")).await.unwrap().remove(0);
    let described = store.describe(&listed).await.unwrap();
    assert_eq!(described.meta.response_header().status.as_u16(), 200);
    assert!(described.size > data.len() as u64);
}
