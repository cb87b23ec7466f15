//! The per-module key-value store policies read through `kv-get`.
//!
//! Reads are lock-free (one atomic load of the current map); writes, which
//! come from operators and are rare, copy the map. A store belongs to a
//! module *name*, so it survives reloads of the module.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

/// One module's key-value entries.
#[derive(Default)]
pub struct Kv {
    map: ArcSwap<HashMap<String, String>>,
}

impl Kv {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<String> {
        self.map.load().get(key).cloned()
    }

    /// Set `key`; a running long-lived instance sees it on its next call.
    pub fn set(&self, key: &str, value: &str) {
        self.map.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(key.to_owned(), value.to_owned());
            m
        });
    }

    /// Remove `key`; returns whether it was there.
    pub fn remove(&self, key: &str) -> bool {
        let mut removed = false;
        self.map.rcu(|m| {
            let mut m = HashMap::clone(m);
            removed = m.remove(key).is_some();
            m
        });
        removed
    }

    /// Every entry, sorted by key.
    pub fn entries(&self) -> BTreeMap<String, String> {
        self.map
            .load()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Every module's store, by module name.
#[derive(Default)]
pub struct KvStores {
    stores: Mutex<HashMap<String, Arc<Kv>>>,
}

impl KvStores {
    /// The store of module `name`, created empty on first use.
    pub fn for_module(&self, name: &str) -> Arc<Kv> {
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        stores.entry(name.to_owned()).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_remove() {
        let stores = KvStores::default();
        let kv = stores.for_module("m");
        kv.set("a", "1");
        assert_eq!(stores.for_module("m").get("a").as_deref(), Some("1"));
        assert!(kv.remove("a"));
        assert!(!kv.remove("a"));
        assert!(kv.entries().is_empty());
    }
}
