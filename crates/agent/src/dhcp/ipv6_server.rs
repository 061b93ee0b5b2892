//! IPv6 host services for local ports: one task per port device that sends
//! the port's router advertisements (at once when it starts serving or its
//! advertisements change, three more within 5 s of the start, then every 30
//! to 100 s, and in answer to each router solicitation) and answers its DHCPv6 messages ([`dhcpv6::respond`]).
//!
//! Like the DHCPv4 server, it reads and writes only the port's own device:
//! nothing it sends reaches the bridge or the overlay, and it never answers a
//! frame from another port. Devices that are missing are retried as
//! [`super::server`] does.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::runtime::Handle;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::dhcpv6::{self, Dhcpv6Lease};
use super::router_advert::{self, Advert, MAX_INTERVAL, MIN_INTERVAL};
use super::server::{PortStatus, RETRY_INTERVAL};
use super::socket::{self, Filter, MAX_FRAME, PacketSocket, Read};

/// What one port is served over IPv6.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ipv6Service {
    /// Its router advertisements (empty: none are sent).
    pub adverts: Vec<Advert>,
    /// Its DHCPv6 lease (`None`: DHCPv6 is not answered).
    pub dhcpv6: Option<Dhcpv6Lease>,
}

impl Ipv6Service {
    pub fn is_empty(&self) -> bool {
        self.adverts.is_empty() && self.dhcpv6.is_none()
    }
}

/// Serves IPv6 (router advertisements) on the devices of the local ports it
/// is given. Dropping it stops every task and closes every socket.
#[derive(Debug)]
pub struct Ipv6Server {
    runtime: Handle,
    ports: HashMap<String, Port>,
}

#[derive(Debug)]
struct Port {
    service: watch::Sender<Ipv6Service>,
    wake: Arc<Notify>,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Shared {
    serving: AtomicBool,
    requests: AtomicU64,
    replies: AtomicU64,
}

impl Drop for Port {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Ipv6Server {
    /// A server whose tasks run on the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime (as `tokio::spawn` does).
    #[allow(clippy::new_without_default)] // needs a runtime, like `tokio::spawn`
    pub fn new() -> Self {
        Ipv6Server {
            runtime: Handle::current(),
            ports: HashMap::new(),
        }
    }

    /// Serve exactly these ports, as (device name, service): as
    /// [`super::DhcpServer::set_ports`]. A port whose service changed
    /// advertises the new one at once.
    pub fn set_ports(&mut self, ports: impl IntoIterator<Item = (String, Ipv6Service)>) {
        self.set_ports_waking(ports, |_| true);
    }

    /// [`Ipv6Server::set_ports`], waking only the ports `woken` names and
    /// those whose service changed: as
    /// [`super::DhcpServer::set_ports_waking`].
    pub fn set_ports_waking(
        &mut self,
        ports: impl IntoIterator<Item = (String, Ipv6Service)>,
        woken: impl Fn(&str) -> bool,
    ) {
        let wanted: HashMap<String, Ipv6Service> = ports
            .into_iter()
            .filter(|(_, service)| !service.is_empty())
            .collect();
        self.ports.retain(|device, _| wanted.contains_key(device));
        for (device, service) in wanted {
            self.serve(device, service, &woken);
        }
    }

    /// Changes only the devices listed: as
    /// [`super::DhcpServer::update_ports`] (an empty service, as `None`,
    /// stops serving the device).
    pub fn update_ports(
        &mut self,
        edits: impl IntoIterator<Item = (String, Option<Ipv6Service>)>,
        woken: impl Fn(&str) -> bool,
    ) {
        for (device, service) in edits {
            match service.filter(|s| !s.is_empty()) {
                Some(service) => self.serve(device, service, &woken),
                None => {
                    self.ports.remove(&device);
                }
            }
        }
    }

    /// Retries `device` now if it is served and missing.
    pub fn wake(&self, device: &str) {
        if let Some(port) = self.ports.get(device) {
            port.wake.notify_one();
        }
    }

    /// Retries now the served devices `woken` names that are missing.
    pub fn wake_where(&self, woken: impl Fn(&str) -> bool) {
        for (device, port) in &self.ports {
            if woken(device) {
                port.wake.notify_one();
            }
        }
    }

    /// The devices being served (whether or not they exist yet).
    pub fn devices(&self) -> impl Iterator<Item = &str> {
        self.ports.keys().map(String::as_str)
    }

    fn serve(&mut self, device: String, service: Ipv6Service, woken: &impl Fn(&str) -> bool) {
        if let Some(port) = self.ports.get(&device) {
            let changed = port.service.send_if_modified(|current| {
                let changed = *current != service;
                if changed {
                    *current = service;
                }
                changed
            });
            if changed || woken(&device) {
                port.wake.notify_one();
            }
            return;
        }
        debug!(device, "ipv6: serve");
        let (tx, rx) = watch::channel(service);
        let wake = Arc::new(Notify::new());
        let shared = Arc::new(Shared::default());
        let task = self.runtime.spawn(serve_port(
            device.clone(),
            rx,
            Arc::clone(&wake),
            Arc::clone(&shared),
        ));
        self.ports.insert(
            device,
            Port {
                service: tx,
                wake,
                shared,
                task,
            },
        );
    }

    /// What the task of `device` is doing; `None` if it is not served.
    /// `requests` counts solicitations and DHCPv6 messages, `replies` every
    /// frame sent (unsolicited advertisements included).
    pub fn status(&self, device: &str) -> Option<PortStatus> {
        let shared = &self.ports.get(device)?.shared;
        Some(PortStatus {
            serving: shared.serving.load(Ordering::Relaxed),
            requests: shared.requests.load(Ordering::Relaxed),
            replies: shared.replies.load(Ordering::Relaxed),
        })
    }
}

async fn serve_port(
    device: String,
    mut service: watch::Receiver<Ipv6Service>,
    wake: Arc<Notify>,
    shared: Arc<Shared>,
) {
    let mut reported_missing = false;
    loop {
        match PacketSocket::open(&device, Filter::Ipv6).and_then(|s| s.into_async(interest())) {
            Ok(socket) => {
                reported_missing = false;
                info!(device, "ipv6: serving");
                shared.serving.store(true, Ordering::Relaxed);
                let why = serve_socket(&device, &socket, &mut service, &wake, &shared).await;
                shared.serving.store(false, Ordering::Relaxed);
                match why {
                    Ok(()) => info!(device, "ipv6: device gone"),
                    Err(error) => warn!(device, %error, "ipv6: socket failed"),
                }
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                if !reported_missing {
                    debug!(device, "ipv6: no such device yet");
                    reported_missing = true;
                }
            }
            Err(error) => warn!(device, %error, "ipv6: cannot open a socket"),
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(RETRY_INTERVAL) => {}
        }
    }
}

fn interest() -> Interest {
    Interest::READABLE | Interest::ERROR
}

/// The intervals after the first advertisement on a newly opened device,
/// before the periodic ones: a VM being plugged may not listen yet when the
/// first goes out, and one that has to wait for its next solicitation loses
/// a second to its kernel's solicitation delay (RFC 4861 §6.2.4 allows a
/// faster start, up to three initial advertisements).
const INITIAL_INTERVALS: [Duration; 3] = [
    Duration::from_millis(250),
    Duration::from_secs(1),
    Duration::from_secs(4),
];

/// A uniformly drawn interval between the minimum and maximum (RFC 4861
/// §6.2.4), so that the advertisements of many ports spread out.
fn next_interval(random: &RandomState, draw: u64) -> Duration {
    let span = (MAX_INTERVAL - MIN_INTERVAL).as_millis() as u64;
    MIN_INTERVAL + Duration::from_millis(random.hash_one(draw) % (span + 1))
}

/// Send every advertisement of `service`.
fn advertise(device: &str, socket: &PacketSocket, service: &Ipv6Service, shared: &Shared) {
    for advert in &service.adverts {
        match socket.send(&router_advert::frame(advert)) {
            Ok(()) => {
                shared.replies.fetch_add(1, Ordering::Relaxed);
            }
            // A full queue or a device going down: the next one goes out.
            Err(error) => debug!(device, %error, "ipv6: advertisement not sent"),
        }
    }
}

async fn serve_socket(
    device: &str,
    socket: &AsyncFd<PacketSocket>,
    service: &mut watch::Receiver<Ipv6Service>,
    wake: &Notify,
    shared: &Shared,
) -> io::Result<()> {
    let ifindex = socket.get_ref().ifindex();
    let same_device = || socket::ifindex(device) == Some(ifindex);
    let random = RandomState::new();
    let mut draws = 0u64;
    let mut buf = vec![0u8; MAX_FRAME];
    advertise(
        device,
        socket.get_ref(),
        &service.borrow_and_update(),
        shared,
    );
    let interval = |draws: u64| match INITIAL_INTERVALS.get(draws as usize) {
        Some(initial) => *initial,
        None => next_interval(&random, draws),
    };
    let mut next_advert = tokio::time::Instant::now() + interval(draws);
    loop {
        let mut guard = tokio::select! {
            ready = socket.ready(interest()) => ready?,
            changed = service.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                advertise(device, socket.get_ref(), &service.borrow_and_update(), shared);
                continue;
            }
            () = tokio::time::sleep_until(next_advert) => {
                if !same_device() {
                    return Ok(());
                }
                advertise(device, socket.get_ref(), &service.borrow(), shared);
                draws += 1;
                next_advert = tokio::time::Instant::now() + interval(draws);
                continue;
            }
            () = wake.notified() => {
                if !same_device() {
                    return Ok(());
                }
                continue;
            }
            () = tokio::time::sleep(RETRY_INTERVAL) => {
                if !same_device() {
                    return Ok(());
                }
                continue;
            }
        };
        let len = match socket::read_ready(&mut guard, &mut buf, same_device)? {
            Read::Frame(len) => len,
            Read::Again => continue,
            Read::Gone => return Ok(()),
        };
        shared.requests.fetch_add(1, Ordering::Relaxed);
        let frame = &buf[..len];
        if router_advert::is_router_solicitation(frame) {
            debug!(device, "ipv6: router solicitation");
            advertise(device, socket.get_ref(), &service.borrow(), shared);
            continue;
        }
        let reply = match &service.borrow().dhcpv6 {
            Some(lease) => dhcpv6::respond(frame, lease),
            None => None,
        };
        let Some(reply) = reply else {
            debug!(device, len, "dhcpv6: nothing to answer");
            continue;
        };
        match socket.get_ref().send(&reply) {
            Ok(()) => {
                shared.replies.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => debug!(device, %error, "dhcpv6: reply not sent"),
        }
    }
}
