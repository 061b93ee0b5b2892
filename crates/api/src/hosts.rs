//! The hosts that run agents: their registrations (persisted under `hosts/`)
//! and their liveness, which lives in memory only: a heartbeat every two
//! seconds per host is not worth an fsync, and a restarted server simply
//! waits for the next one.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use compiler::protocol::{HEARTBEAT_SECONDS, HostRegistration, MISSED_HEARTBEATS_DEAD};
use model::Timestamp;

/// The store key of a host's registration.
pub fn key(name: &str) -> String {
    format!("hosts/{name}")
}

pub const KEY_PREFIX: &str = "hosts/";

#[derive(Clone, Debug)]
pub struct HostEntry {
    pub registration: HostRegistration,
    pub started_at: Timestamp,
    pub heartbeat_at: Timestamp,
    pub alive: bool,
    seen: Option<Instant>,
}

#[derive(Default)]
pub struct Hosts {
    entries: Mutex<BTreeMap<String, HostEntry>>,
}

/// What a heartbeat changed.
#[derive(Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// The registration is new or differs from the stored one: persist it.
    pub registration_changed: bool,
}

impl Hosts {
    /// Hosts known from the store start dead: alive takes a heartbeat.
    pub fn load(registrations: impl IntoIterator<Item = HostRegistration>) -> Self {
        let entries = registrations
            .into_iter()
            .map(|r| {
                let entry = HostEntry {
                    registration: r.clone(),
                    started_at: 0,
                    heartbeat_at: 0,
                    alive: false,
                    seen: None,
                };
                (r.name, entry)
            })
            .collect();
        Hosts {
            entries: Mutex::new(entries),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, HostEntry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn heartbeat(
        &self,
        registration: HostRegistration,
        now: Timestamp,
        at: Instant,
    ) -> Heartbeat {
        let mut entries = self.lock();
        let registration_changed = entries
            .get(&registration.name)
            .is_none_or(|e| e.registration != registration);
        let entry = entries
            .entry(registration.name.clone())
            .or_insert_with(|| HostEntry {
                registration: registration.clone(),
                started_at: now,
                heartbeat_at: now,
                alive: false,
                seen: None,
            });
        if !entry.alive {
            entry.started_at = now;
        }
        entry.registration = registration;
        entry.heartbeat_at = now;
        entry.alive = true;
        entry.seen = Some(at);
        Heartbeat {
            registration_changed,
        }
    }

    pub fn get(&self, name: &str) -> Option<HostEntry> {
        self.lock().get(name).cloned()
    }

    pub fn list(&self) -> Vec<HostEntry> {
        self.lock().values().cloned().collect()
    }

    /// Mark hosts whose heartbeats stopped as dead; returns the newly dead.
    pub fn reap(&self, at: Instant) -> Vec<String> {
        let deadline = Duration::from_secs(HEARTBEAT_SECONDS * u64::from(MISSED_HEARTBEATS_DEAD));
        let mut dead = Vec::new();
        for (name, entry) in self.lock().iter_mut() {
            let overdue = entry
                .seen
                .is_none_or(|seen| at.duration_since(seen) > deadline);
            if entry.alive && overdue {
                entry.alive = false;
                dead.push(name.clone());
            }
        }
        dead
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(name: &str, ip: &str) -> HostRegistration {
        HostRegistration {
            protocol_version: compiler::protocol::PROTOCOL_VERSION,
            name: name.into(),
            underlay_ip: ip.parse().unwrap(),
            capabilities: vec![],
            physical_networks: vec![],
            gateway: false,
        }
    }

    #[test]
    fn heartbeats_keep_hosts_alive_and_silence_kills_them() {
        let hosts = Hosts::default();
        let t0 = Instant::now();
        assert!(
            hosts
                .heartbeat(reg("h1", "192.0.2.1"), 100, t0)
                .registration_changed
        );
        assert!(
            !hosts
                .heartbeat(reg("h1", "192.0.2.1"), 102, t0 + Duration::from_secs(2))
                .registration_changed
        );
        assert!(
            hosts.reap(t0 + Duration::from_secs(7)).is_empty(),
            "5 s since the last beat"
        );
        assert_eq!(
            hosts.reap(t0 + Duration::from_secs(9)),
            vec!["h1".to_owned()]
        );
        assert!(
            hosts.reap(t0 + Duration::from_secs(20)).is_empty(),
            "reported dead once"
        );
        assert!(!hosts.get("h1").unwrap().alive);
        // Back, with a new underlay address: alive again, and worth persisting.
        let beat = hosts.heartbeat(reg("h1", "192.0.2.9"), 130, t0 + Duration::from_secs(30));
        assert!(beat.registration_changed);
        let h = hosts.get("h1").unwrap();
        assert!(h.alive);
        assert_eq!(h.started_at, 130);
    }

    #[test]
    fn hosts_from_the_store_are_dead_until_they_beat() {
        let hosts = Hosts::load([reg("h1", "192.0.2.1")]);
        assert!(!hosts.get("h1").unwrap().alive);
        let beat = hosts.heartbeat(reg("h1", "192.0.2.1"), 5, Instant::now());
        assert!(!beat.registration_changed, "already stored");
        assert!(hosts.get("h1").unwrap().alive);
    }
}
