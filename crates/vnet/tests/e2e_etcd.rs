//! End to end on etcd, as root, in throwaway namespaces: the same real server
//! and agents as the other e2e tests, with the server on `--store etcd` (an
//! etcd member of the test's own). The compiler is fed by etcd's watch: VMs on
//! two hosts get their addresses by DHCP and reach each other across VXLAN,
//! and after a server restart on the same etcd, the cloud is all there and a
//! new port joins it. Then a second server (a replica) joins and the first is
//! killed: the agents move to the replica without touching the kernel, their
//! ports stay ACTIVE, and a port made through the replica carries traffic.

#![allow(clippy::unwrap_used)] // a failed setup step should panic the test

mod common;

use std::time::Duration;

use common::{Cloud, dhcp, http, kernel_state, wait_for};

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

    // A replica joins; the leader is killed (-9).
    let (replica, _replica_proc) = cloud.start_replica();
    let leads = |api| http(api, "GET", "/vnet/v1/replica", None).1["replica"]["leads"] == true;
    assert!(!leads(replica), "the first server leads");
    let before: Vec<String> = cloud.hosts.iter().map(|h| kernel_state(&h.ns)).collect();
    cloud.kill_server();
    cloud.api = replica;
    wait_for("the replica to lead", Duration::from_secs(20), || {
        leads(replica)
    });
    for h in 1..=2 {
        wait_for("the agent to move", Duration::from_secs(20), || {
            cloud
                .agent_log(h)
                .contains("moved to another server replica")
        });
    }
    for port in [&p1, &p2, &p3] {
        assert_eq!(
            cloud.status(port),
            "ACTIVE",
            "a port went DOWN with the leader"
        );
    }
    let after: Vec<String> = cloud.hosts.iter().map(|h| kernel_state(&h.ns)).collect();
    assert_eq!(after, before, "an agent that moved changed its kernel");
    let (p4, vm4) = cloud.vm("proj-a", &net, &sub, "10.0.0.13", 1);
    wait_for(
        "a port made through the replica ACTIVE",
        Duration::from_secs(20),
        || cloud.status(&p4) == "ACTIVE",
    );
    assert_eq!(dhcp(&vm4), "10.0.0.13/24");
    assert_eq!(
        vm4.ping("10.0.0.12", 3),
        3,
        "across hosts after the failover"
    );
}
