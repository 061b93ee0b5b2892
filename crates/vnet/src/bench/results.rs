//! The figures of one `vnet bench api` run, as measured: plain data with the
//! few derived figures (rates, per-port costs, ratios) that follow from it.

use std::time::Duration;

use super::api::Plan;
use super::list_scale::ListScale;
use super::stats::{Samples, Usage, ratio};

/// A baseline, measured at the start and at the end of the run.
pub struct Floor {
    pub start: Samples,
    pub end: Samples,
    /// Both together: what ratios are taken against.
    pub pooled: Samples,
}

impl Floor {
    pub fn new(start: Samples, end: Samples) -> Floor {
        let pooled = start.merged(&end);
        Floor { start, end, pooled }
    }

    pub fn p50(&self) -> Duration {
        self.pooled.p50()
    }
}

pub struct Floors {
    /// `GET /` on a keep-alive connection.
    pub http: Floor,
    /// A 4 KiB append + fdatasync on the store's filesystem.
    pub fsync: Floor,
    /// With the etcd store: one single-key put transaction straight to etcd,
    /// one at a time (etcd's own durable-transaction floor: a raft round and
    /// a WAL fsync).
    pub etcd_txn: Option<Floor>,
}

pub struct Setup {
    pub network_ids: Vec<String>,
    pub network_create: Samples,
    pub subnet_create: Samples,
}

pub struct PortPhase {
    pub clients: usize,
    pub ports: usize,
    pub wall: Duration,
    pub latencies: Samples,
    /// What the server spent during the phase (RSS: at its end).
    pub server: Usage,
    /// CPU time of this process (all bench clients) during the phase: it
    /// shares the machine's cores with the server.
    pub client_cpu_seconds: f64,
    /// What the etcd member spent during the phase (with the etcd store).
    pub etcd: Option<Usage>,
}

impl PortPhase {
    pub fn per_second(&self) -> f64 {
        self.ports as f64 / self.wall.as_secs_f64()
    }

    pub fn cpu_per_1000(&self) -> f64 {
        self.server.cpu_seconds * 1000.0 / self.ports as f64
    }

    /// KiB the server wrote to storage per port (durability's write amplification).
    pub fn disk_kib_per_port(&self) -> f64 {
        self.server.disk_write_bytes as f64 / 1024.0 / self.ports as f64
    }

    pub fn client_cpu_per_1000(&self) -> f64 {
        self.client_cpu_seconds * 1000.0 / self.ports as f64
    }

    pub fn etcd_cpu_per_1000(&self) -> Option<f64> {
        self.etcd
            .as_ref()
            .map(|u| u.cpu_seconds * 1000.0 / self.ports as f64)
    }
}

pub struct ListFigure {
    pub name: &'static str,
    pub path: String,
    pub items: usize,
    pub latencies: Samples,
}

impl ListFigure {
    /// The name with the number of ports listed.
    pub fn label(&self) -> String {
        format!("{} ({})", self.name, self.items)
    }
}

pub struct RuleFigure {
    pub rules: usize,
    /// Rules in each of `first` and `last`.
    pub window: usize,
    pub first: Samples,
    pub last: Samples,
    pub all: Samples,
}

impl RuleFigure {
    /// p50 of the last rules over p50 of the first: 1 when creation stays flat.
    pub fn growth(&self) -> Option<f64> {
        ratio(self.last.p50(), self.first.p50())
    }
}

/// Routers and floating IPs: subnets attached one by one to one router, each
/// with a port given a floating IP at creation.
pub struct L3Figure {
    pub subnets: usize,
    pub interface_add: Samples,
    pub floating_ip: Samples,
}

pub struct Results {
    pub plan: Plan,
    /// The store the server ran on: "embedded" or "etcd".
    pub store: &'static str,
    pub server_pid: u32,
    pub clk_tck: f64,
    pub floors: Floors,
    pub setup: Setup,
    pub single: PortPhase,
    pub concurrent: PortPhase,
    pub lists: Vec<ListFigure>,
    pub rules: RuleFigure,
    pub l3: L3Figure,
    /// Lists in a cloud of 1,000 ports and of `--scale-ports` (issue 13).
    pub scale: Option<ListScale>,
}

/// "1 client", "8 clients".
pub fn clients(n: usize) -> String {
    if n == 1 {
        "1 client".into()
    } else {
        format!("{n} clients")
    }
}
