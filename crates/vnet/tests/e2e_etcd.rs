//! End to end on etcd, as root, in throwaway namespaces: the same real server
//! and agents as the other e2e tests, with the server on `--store etcd` (an
//! etcd member of the test's own). The compiler is fed by etcd's watch: VMs on
//! two hosts get their addresses by DHCP and reach each other across VXLAN,
//! and after a server restart on the same etcd, the cloud is all there and a
//! new port joins it.

#![allow(clippy::unwrap_used)] // a failed setup step should panic the test

mod common;

use std::time::Duration;

use common::{Cloud, dhcp, wait_for};

#[test]
fn a_cloud_on_etcd_carries_traffic_across_a_server_restart() {
    let mut cloud = Cloud::on_etcd("et", 2);
    let (net, sub) = cloud.network("proj-a", "10.0.0.0/24");
    let (p1, vm1) = cloud.vm("proj-a", &net, &sub, "10.0.0.10", 1);
    let (p2, vm2) = cloud.vm("proj-a", &net, &sub, "10.0.0.11", 2);
    for port in [&p1, &p2] {
        wait_for("ports ACTIVE", Duration::from_secs(20), || {
            cloud.status(port) == "ACTIVE"
        });
    }
    assert_eq!(dhcp(&vm1), "10.0.0.10/24");
    assert_eq!(dhcp(&vm2), "10.0.0.11/24");
    assert_eq!(vm1.ping("10.0.0.11", 3), 3, "across hosts on etcd");

    cloud.stop_server();
    cloud.start_server();
    for port in [&p1, &p2] {
        wait_for(
            "ports ACTIVE after the restart",
            Duration::from_secs(20),
            || cloud.status(port) == "ACTIVE",
        );
    }
    let (p3, vm3) = cloud.vm("proj-a", &net, &sub, "10.0.0.12", 2);
    wait_for("the new port ACTIVE", Duration::from_secs(20), || {
        cloud.status(&p3) == "ACTIVE"
    });
    assert_eq!(dhcp(&vm3), "10.0.0.12/24");
    assert_eq!(vm1.ping("10.0.0.12", 3), 3, "a port made after the restart");
    assert_eq!(vm1.ping("10.0.0.11", 3), 3, "the old ones still");
}
