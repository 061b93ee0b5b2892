//! The DHCP server: one task per local port device, each reading the device's
//! DHCP requests from a packet socket and answering them with
//! [`responder::respond`] on the same device.
//!
//! A request is only ever answered on the device of the port whose lease
//! matches its client MAC, so only local ports are served and no DHCP frame
//! touches the bridge or the overlay.
//!
//! Devices come and go on their own schedule (Nova creates the tap, a VM
//! namespace brings its veth): a port whose device does not exist yet is
//! retried every [`RETRY_INTERVAL`] and at every [`DhcpServer::set_ports`];
//! a device that disappears (or is replaced by one of the same name) is
//! reopened the same way. Sockets are opened in the network namespace of the
//! runtime's worker threads, which must be the host's.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use compiler::protocol::DhcpLease;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::runtime::Handle;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::responder;
use super::socket::{self, Filter, MAX_FRAME, PacketSocket, Read};

/// How often a port whose device is missing (or failed) is retried.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Serves DHCP on the devices of the local ports it is given. Dropping it
/// stops every task and closes every socket.
#[derive(Debug)]
pub struct DhcpServer {
    runtime: Handle,
    ports: HashMap<String, Port>,
}

/// What one port's task is doing, for status and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStatus {
    /// A socket is open on the device.
    pub serving: bool,
    /// DHCP requests read from the device (whoever they were for).
    pub requests: u64,
    /// Replies written to it.
    pub replies: u64,
}

#[derive(Debug)]
struct Port {
    lease: watch::Sender<DhcpLease>,
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

impl DhcpServer {
    /// A server whose tasks run on the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime (as `tokio::spawn` does).
    #[allow(clippy::new_without_default)] // needs a runtime, like `tokio::spawn`
    pub fn new() -> Self {
        Self::with_runtime(Handle::current())
    }

    /// A server whose tasks run on `runtime`.
    pub fn with_runtime(runtime: Handle) -> Self {
        DhcpServer {
            runtime,
            ports: HashMap::new(),
        }
    }

    /// Serve exactly these ports, as (device name, lease): start serving new
    /// devices, stop serving devices not listed, and update leases in place
    /// (the next request gets the new one; no socket is reopened). Devices
    /// that are missing are retried now. If a device is listed twice, the
    /// last lease wins.
    pub fn set_ports(&mut self, ports: impl IntoIterator<Item = (String, DhcpLease)>) {
        self.set_ports_waking(ports, |_| true);
    }

    /// [`DhcpServer::set_ports`], retrying now only the missing devices
    /// `woken` names (and those whose lease changed): a change that can have
    /// plugged only some devices wakes no other port's task.
    pub fn set_ports_waking(
        &mut self,
        ports: impl IntoIterator<Item = (String, DhcpLease)>,
        woken: impl Fn(&str) -> bool,
    ) {
        let wanted: HashMap<String, DhcpLease> = ports.into_iter().collect();
        self.ports.retain(|device, _| {
            let keep = wanted.contains_key(device);
            if !keep {
                debug!(device, "dhcp: stop serving");
            }
            keep
        });
        for (device, lease) in wanted {
            self.serve(device, lease, &woken);
        }
    }

    /// Changes only the devices listed, as (device, lease): `None` stops
    /// serving it, a lease is taken as [`DhcpServer::set_ports_waking`]
    /// takes it (an unchanged one leaves its task be, unless `woken` names
    /// it). The devices not listed are not looked at.
    pub fn update_ports(
        &mut self,
        edits: impl IntoIterator<Item = (String, Option<DhcpLease>)>,
        woken: impl Fn(&str) -> bool,
    ) {
        for (device, lease) in edits {
            match lease {
                Some(lease) => self.serve(device, lease, &woken),
                None => {
                    if self.ports.remove(&device).is_some() {
                        debug!(device, "dhcp: stop serving");
                    }
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

    fn serve(&mut self, device: String, lease: DhcpLease, woken: &impl Fn(&str) -> bool) {
        if let Some(port) = self.ports.get(&device) {
            let changed = port.lease.send_if_modified(|current| {
                let changed = *current != lease;
                if changed {
                    *current = lease;
                }
                changed
            });
            // A device that vanished and came back is picked up now
            // rather than at the next retry tick.
            if changed || woken(&device) {
                port.wake.notify_one();
            }
            return;
        }
        debug!(device, ip = %lease.ip, mac = %lease.mac, "dhcp: serve");
        let (tx, rx) = watch::channel(lease);
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
                lease: tx,
                wake,
                shared,
                task,
            },
        );
    }

    /// The devices being served (whether or not they exist yet).
    pub fn devices(&self) -> impl Iterator<Item = &str> {
        self.ports.keys().map(String::as_str)
    }

    /// What the task of `device` is doing; `None` if it is not served.
    pub fn status(&self, device: &str) -> Option<PortStatus> {
        let shared = &self.ports.get(device)?.shared;
        Some(PortStatus {
            serving: shared.serving.load(Ordering::Relaxed),
            requests: shared.requests.load(Ordering::Relaxed),
            replies: shared.replies.load(Ordering::Relaxed),
        })
    }
}

/// One port, forever: open the device's socket when it exists, serve it until
/// it goes away, wait, and again.
async fn serve_port(
    device: String,
    lease: watch::Receiver<DhcpLease>,
    wake: Arc<Notify>,
    shared: Arc<Shared>,
) {
    // Log a missing device once, not at every retry.
    let mut reported_missing = false;
    loop {
        match PacketSocket::open(&device, Filter::Dhcpv4).and_then(|s| s.into_async(interest())) {
            Ok(socket) => {
                reported_missing = false;
                info!(
                    device,
                    ifindex = socket.get_ref().ifindex(),
                    "dhcp: serving"
                );
                shared.serving.store(true, Ordering::Relaxed);
                let why = serve_socket(&device, &socket, &lease, &wake, &shared).await;
                shared.serving.store(false, Ordering::Relaxed);
                match why {
                    Ok(()) => info!(device, "dhcp: device gone"),
                    Err(error) => warn!(device, %error, "dhcp: socket failed"),
                }
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                if !reported_missing {
                    debug!(device, "dhcp: no such device yet");
                    reported_missing = true;
                }
            }
            Err(error) => warn!(device, %error, "dhcp: cannot open a socket"),
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(RETRY_INTERVAL) => {}
        }
    }
}

fn interest() -> Interest {
    // ERROR too: a deleted device shows only as `sk_err` (EPOLLERR), which a
    // READABLE-only waiter would never see.
    Interest::READABLE | Interest::ERROR
}

/// Answer requests on `socket` until its device is gone (`Ok`) or the socket
/// fails (`Err`).
async fn serve_socket(
    device: &str,
    socket: &AsyncFd<PacketSocket>,
    lease: &watch::Receiver<DhcpLease>,
    wake: &Notify,
    shared: &Shared,
) -> io::Result<()> {
    let ifindex = socket.get_ref().ifindex();
    let same_device = || socket::ifindex(device) == Some(ifindex);
    let mut buf = vec![0u8; MAX_FRAME];
    loop {
        let mut guard = tokio::select! {
            ready = socket.ready(interest()) => ready?,
            () = wake.notified() => {
                if !same_device() {
                    return Ok(());
                }
                continue;
            }
            // The kernel reports a deleted device as a socket error, but
            // only to a socket it still counts as running: a look now and
            // then catches the rest.
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
        let Some(reply) = responder::respond(frame, &lease.borrow()) else {
            debug!(device, len, "dhcp: nothing to answer");
            continue;
        };
        match socket.get_ref().send(&reply) {
            Ok(()) => {
                shared.replies.fetch_add(1, Ordering::Relaxed);
                if let Some(request) = responder::parse_request(frame) {
                    debug!(
                        device,
                        request = ?request.message_type,
                        xid = request.transaction_id,
                        "dhcp: answered"
                    );
                }
            }
            // A full queue or a device going down: the client retries.
            Err(error) => debug!(device, %error, "dhcp: reply not sent"),
        }
    }
}
