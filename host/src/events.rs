//! The operator's event log: what changed lately — purges, policy modules
//! loaded, rejected or removed, circuit breakers tripping, eviction spikes,
//! certificates and configuration reloaded or refused —
//! kept in a bounded ring for the dashboard and `stavka ctl events`. Each
//! event is also a `tracing` line where it happens; this is the short
//! memory an operator looks at first.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Events kept; older ones are dropped.
pub const KEPT: usize = 256;
/// Characters kept of an event's subject or detail.
const TEXT_LIMIT: usize = 512;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// A purge through the admin API.
    Purge,
    /// A policy module version was published.
    PolicyLoaded,
    /// A policy module version was rejected; the previous one serves.
    PolicyRejected,
    /// A policy module was unpublished (its file is gone).
    PolicyRemoved,
    /// A module's circuit breaker opened: its failure mode answers.
    BreakerOpened,
    /// A module's circuit breaker closed or went half-open again.
    BreakerRecovered,
    /// Evictions per second jumped well above their recent rate.
    EvictionSpike,
    /// A TLS certificate's files changed and the new one serves.
    CertificateLoaded,
    /// A TLS certificate's new files were refused; the previous one serves.
    CertificateRejected,
    /// The configuration file was read again and published.
    ConfigReloaded,
    /// A configuration reload was refused; the running one serves.
    ConfigRejected,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 11] = [
        EventKind::Purge,
        EventKind::PolicyLoaded,
        EventKind::PolicyRejected,
        EventKind::PolicyRemoved,
        EventKind::BreakerOpened,
        EventKind::BreakerRecovered,
        EventKind::EvictionSpike,
        EventKind::CertificateLoaded,
        EventKind::CertificateRejected,
        EventKind::ConfigReloaded,
        EventKind::ConfigRejected,
    ];

    /// The name in `/events` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Purge => "purge",
            EventKind::PolicyLoaded => "policy-loaded",
            EventKind::PolicyRejected => "policy-rejected",
            EventKind::PolicyRemoved => "policy-removed",
            EventKind::BreakerOpened => "breaker-opened",
            EventKind::BreakerRecovered => "breaker-recovered",
            EventKind::EvictionSpike => "eviction-spike",
            EventKind::CertificateLoaded => "certificate-loaded",
            EventKind::CertificateRejected => "certificate-rejected",
            EventKind::ConfigReloaded => "config-reloaded",
            EventKind::ConfigRejected => "config-rejected",
        }
    }

    /// Whether an operator should look: something failed or is under
    /// pressure.
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            EventKind::PolicyRejected
                | EventKind::BreakerOpened
                | EventKind::EvictionSpike
                | EventKind::CertificateRejected
                | EventKind::ConfigRejected
        )
    }
}

/// One event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Increasing from 1; `GET /events?after=` pages by it.
    pub id: u64,
    /// Unix seconds.
    pub at: f64,
    /// What happened.
    pub kind: EventKind,
    /// Whether an operator should look.
    pub warning: bool,
    /// What it happened to: a module, a purge selector and value.
    pub subject: String,
    /// The particulars, in words.
    pub detail: String,
}

/// The last [`KEPT`] events.
#[derive(Debug, Default)]
pub struct EventLog {
    ring: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    last_id: u64,
    events: VecDeque<Event>,
}

/// `text`, cut to [`TEXT_LIMIT`] characters.
fn bounded(text: String) -> String {
    match text.char_indices().nth(TEXT_LIMIT) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

impl EventLog {
    /// Keep an event, dropping the oldest beyond [`KEPT`].
    pub fn record(&self, kind: EventKind, subject: impl Into<String>, detail: impl Into<String>) {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let (subject, detail) = (bounded(subject.into()), bounded(detail.into()));
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.last_id += 1;
        let id = ring.last_id;
        if ring.events.len() == KEPT {
            ring.events.pop_front();
        }
        ring.events.push_back(Event {
            id,
            at,
            kind,
            warning: kind.is_warning(),
            subject,
            detail,
        });
    }

    /// The newest `limit` events with an id above `after`, oldest first.
    pub fn after(&self, after: u64, limit: usize) -> Vec<Event> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let newer = ring.events.iter().filter(|e| e.id > after);
        let skip = newer.clone().count().saturating_sub(limit);
        newer.skip(skip).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_keeps_the_newest_events_and_pages_by_id() {
        let log = EventLog::default();
        for i in 0..KEPT + 10 {
            log.record(EventKind::Purge, format!("url {i}"), "");
        }
        let all = log.after(0, usize::MAX);
        assert_eq!(all.len(), KEPT);
        assert_eq!(all[0].id, 11);
        assert_eq!(all.last().unwrap().id, (KEPT + 10) as u64);
        let page = log.after(all.last().unwrap().id - 3, 2);
        assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), [265, 266]);
        assert!(log.after(all.last().unwrap().id, 10).is_empty());
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let log = EventLog::default();
        log.record(EventKind::PolicyRejected, "m", "é".repeat(2 * TEXT_LIMIT));
        let event = &log.after(0, 1)[0];
        assert_eq!(event.detail.chars().count(), TEXT_LIMIT + 1);
        assert!(event.warning);
    }

    #[test]
    fn kinds_serialize_as_their_names() {
        for kind in EventKind::ALL {
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::Value::String(kind.as_str().into())
            );
        }
    }
}
