//! The hosts that run agents: their registrations (persisted under `hosts/`)
//! and their liveness. Heartbeats live in memory only (one every two seconds
//! per host is not worth an fsync); a host's death and return are stored, in
//! its record, because they move routers' gateways (the compiler reads them).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use compiler::protocol::{HEARTBEAT_SECONDS, HostRegistration, MISSED_HEARTBEATS_DEAD};
use model::Timestamp;
use serde::{Deserialize, Serialize};

/// The store key of a host's registration.
pub fn key(name: &str) -> String {
    format!("hosts/{name}")
}

pub const KEY_PREFIX: &str = "hosts/";

/// A host's stored record: what its agent registered, whether the server
/// found it dead (its heartbeats stopped), and what the operator set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredHost {
    #[serde(flatten)]
    pub registration: HostRegistration,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dead: bool,
    #[serde(flatten)]
    pub settings: HostSettings,
}

/// What an operator sets on a host through Neutron's agent API; the agent's
/// re-registrations keep it. A host with `admin_state_up` false takes no
/// routers' gateways (they move to other gateway hosts), as a disabled L3
/// agent takes no routers in Neutron.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSettings {
    #[serde(default = "up", skip_serializing_if = "is_up")]
    pub admin_state_up: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl Default for HostSettings {
    fn default() -> Self {
        HostSettings {
            admin_state_up: true,
            description: String::new(),
        }
    }
}

fn up() -> bool {
    true
}

fn is_up(b: &bool) -> bool {
    *b
}

impl StoredHost {
    /// The compiler's view of it.
    pub fn input(self) -> compiler::Input {
        let r = self.registration;
        compiler::Input::Host {
            name: r.name,
            underlay_ip: r.underlay_ip,
            physical_networks: r.physical_networks,
            gateway: r.gateway && !self.dead && self.settings.admin_state_up,
            availability_zone: r.availability_zone,
        }
    }
}

#[derive(Clone, Debug)]
pub struct HostEntry {
    pub registration: HostRegistration,
    pub started_at: Timestamp,
    pub heartbeat_at: Timestamp,
    pub alive: bool,
    pub settings: HostSettings,
    seen: Option<Instant>,
}

impl HostEntry {
    /// The record to store for it.
    pub fn stored(&self) -> StoredHost {
        StoredHost {
            registration: self.registration.clone(),
            dead: !self.alive,
            settings: self.settings.clone(),
        }
    }
}

#[derive(Default)]
pub struct Hosts {
    entries: Mutex<BTreeMap<String, HostEntry>>,
}

/// What a heartbeat changed.
#[derive(Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// The registration is new or differs from the stored one, or the host
    /// was dead: store it (alive).
    pub persist: bool,
}

impl Hosts {
    /// Hosts known from the store keep their stored liveness; one stored
    /// alive is given a full heartbeat period from `at` before it is reaped.
    pub fn load(stored: impl IntoIterator<Item = StoredHost>, at: Instant) -> Self {
        let entries = stored
            .into_iter()
            .map(|s| {
                let entry = HostEntry {
                    registration: s.registration.clone(),
                    started_at: 0,
                    heartbeat_at: 0,
                    alive: !s.dead,
                    settings: s.settings,
                    seen: (!s.dead).then_some(at),
                };
                (s.registration.name, entry)
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
        let persist = entries
            .get(&registration.name)
            .is_none_or(|e| e.registration != registration || !e.alive);
        let entry = entries
            .entry(registration.name.clone())
            .or_insert_with(|| HostEntry {
                registration: registration.clone(),
                started_at: now,
                heartbeat_at: now,
                alive: false,
                settings: HostSettings::default(),
                seen: None,
            });
        if !entry.alive {
            entry.started_at = now;
        }
        entry.registration = registration;
        entry.heartbeat_at = now;
        entry.alive = true;
        entry.seen = Some(at);
        Heartbeat { persist }
    }

    pub fn get(&self, name: &str) -> Option<HostEntry> {
        self.lock().get(name).cloned()
    }

    /// The zones of `hosts` (those registered), sorted, once each: one
    /// lock, no entry copied.
    pub fn zones_of<'a>(&self, hosts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let entries = self.lock();
        let zones: std::collections::BTreeSet<&str> = hosts
            .into_iter()
            .filter_map(|h| entries.get(h))
            .map(|e| e.registration.availability_zone.as_str())
            .collect();
        zones.into_iter().map(str::to_owned).collect()
    }

    pub fn list(&self) -> Vec<HostEntry> {
        self.lock().values().cloned().collect()
    }

    /// Change what the operator sets on a host; its record to store.
    pub fn configure(
        &self,
        name: &str,
        change: impl FnOnce(&mut HostSettings),
    ) -> Option<StoredHost> {
        let mut entries = self.lock();
        let entry = entries.get_mut(name)?;
        change(&mut entry.settings);
        Some(entry.stored())
    }

    /// Forget a host (Neutron's agent delete): an agent still running
    /// registers again with its next heartbeat.
    pub fn forget(&self, name: &str) -> bool {
        self.lock().remove(name).is_some()
    }

    /// A follower's registry follows the stored records: `name`'s record
    /// became `stored` (`None`: deleted). Its liveness is the record's: the
    /// leader hears the heartbeats and stores deaths and returns.
    pub fn replicate(&self, name: &str, stored: Option<StoredHost>, at: Instant) {
        let mut entries = self.lock();
        let Some(s) = stored else {
            entries.remove(name);
            return;
        };
        let entry = entries.entry(name.to_owned()).or_insert_with(|| HostEntry {
            registration: s.registration.clone(),
            started_at: 0,
            heartbeat_at: 0,
            alive: false,
            settings: HostSettings::default(),
            seen: None,
        });
        entry.registration = s.registration;
        entry.settings = s.settings;
        entry.alive = !s.dead;
        entry.seen = entry.alive.then_some(at);
    }

    /// A replica that starts to lead gives every live host a full heartbeat
    /// period from `at`: their agents heartbeated to the previous leader.
    pub fn grace(&self, at: Instant) {
        for entry in self.lock().values_mut().filter(|e| e.alive) {
            entry.seen = Some(at);
        }
    }

    /// Mark hosts whose heartbeats stopped as dead; returns the newly dead,
    /// as they are to be stored.
    pub fn reap(&self, at: Instant) -> Vec<StoredHost> {
        let deadline = Duration::from_secs(HEARTBEAT_SECONDS * u64::from(MISSED_HEARTBEATS_DEAD));
        let mut dead = Vec::new();
        for entry in self.lock().values_mut() {
            let overdue = entry
                .seen
                .is_none_or(|seen| at.duration_since(seen) > deadline);
            if entry.alive && overdue {
                entry.alive = false;
                dead.push(entry.stored());
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
            availability_zone: compiler::protocol::DEFAULT_ZONE.into(),
        }
    }

    #[test]
    fn heartbeats_keep_hosts_alive_and_silence_kills_them() {
        let hosts = Hosts::default();
        let t0 = Instant::now();
        assert!(hosts.heartbeat(reg("h1", "192.0.2.1"), 100, t0).persist);
        assert!(
            !hosts
                .heartbeat(reg("h1", "192.0.2.1"), 102, t0 + Duration::from_secs(2))
                .persist
        );
        assert!(
            hosts.reap(t0 + Duration::from_secs(7)).is_empty(),
            "5 s since the last beat"
        );
        let dead = hosts.reap(t0 + Duration::from_secs(9));
        assert_eq!(dead.len(), 1);
        assert!(dead[0].dead && dead[0].registration.name == "h1");
        assert!(
            hosts.reap(t0 + Duration::from_secs(20)).is_empty(),
            "reported dead once"
        );
        assert!(!hosts.get("h1").unwrap().alive);
        // Back, unchanged: alive again, and stored so (no longer dead).
        let beat = hosts.heartbeat(reg("h1", "192.0.2.1"), 130, t0 + Duration::from_secs(30));
        assert!(beat.persist);
        let h = hosts.get("h1").unwrap();
        assert!(h.alive);
        assert_eq!(h.started_at, 130);
    }

    #[test]
    fn hosts_from_the_store_keep_their_liveness_until_silence_kills_them() {
        let t0 = Instant::now();
        let stored = |name: &str, dead| StoredHost {
            registration: reg(name, "192.0.2.1"),
            dead,
            settings: HostSettings::default(),
        };
        let hosts = Hosts::load([stored("h1", false), stored("h2", true)], t0);
        assert!(hosts.get("h1").unwrap().alive);
        assert!(!hosts.get("h2").unwrap().alive);
        assert!(!hosts.heartbeat(reg("h1", "192.0.2.1"), 5, t0).persist);
        assert!(
            hosts.heartbeat(reg("h2", "192.0.2.1"), 5, t0).persist,
            "back from the dead"
        );
        // h3 stored alive but silent since the load: reaped after the period.
        let hosts = Hosts::load([stored("h3", false)], t0);
        assert_eq!(hosts.reap(t0 + Duration::from_secs(9)).len(), 1);
    }

    #[test]
    fn a_dead_host_offers_no_gateway_and_its_record_reads_back() {
        let mut r = reg("h1", "192.0.2.1");
        r.gateway = true;
        r.physical_networks = vec!["external".into()];
        let dead = StoredHost {
            registration: r.clone(),
            dead: true,
            settings: HostSettings::default(),
        };
        let bytes = serde_json::to_vec(&dead).unwrap();
        let back: StoredHost = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, dead);
        // A record written before liveness was stored reads as alive.
        let old: StoredHost = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert!(!old.dead);
        match dead.input() {
            compiler::Input::Host { gateway, .. } => assert!(!gateway),
            other => panic!("{other:?}"),
        }
        match old.clone().input() {
            compiler::Input::Host { gateway, .. } => assert!(gateway),
            other => panic!("{other:?}"),
        }
        // Disabled by its operator: alive, but no gateway host either.
        let disabled = StoredHost {
            settings: HostSettings {
                admin_state_up: false,
                description: "draining".into(),
            },
            ..old
        };
        let bytes = serde_json::to_vec(&disabled).unwrap();
        assert_eq!(
            serde_json::from_slice::<StoredHost>(&bytes).unwrap(),
            disabled
        );
        match disabled.input() {
            compiler::Input::Host { gateway, .. } => assert!(!gateway),
            other => panic!("{other:?}"),
        }
    }
}
