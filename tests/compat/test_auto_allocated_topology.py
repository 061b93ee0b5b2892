"""Get-me-a-network (Neutron's auto-allocated-topology) with the real
`openstack` CLI: a default external network and default subnet pools make a
project's network, subnets and router in one request; `--check-resources`
only checks; delete removes them whole."""

from __future__ import annotations

from helpers import Api, Cli, expect, expect_error, sdk_connection, uniq


def test_get_me_a_network(fresh_server):
    admin = Api(fresh_server.url)
    cli = Cli(fresh_server.url)
    t = fresh_server.api(project=uniq("p"), roles="member")
    url = f"/v2.0/auto-allocated-topology/{t.project}"

    # Nothing to connect to: refused, with Neutron's reason, nothing made.
    err = expect_error(t.get(url), 409, "AutoAllocationFailure")
    assert err["message"] == "Deployment error: No default router:external network."
    assert t.list_own("networks") == []

    public = cli.json("network", "create", "--external", "--default", "public")
    assert public["is_default"] is True
    cli.ok("subnet", "create", "--network", "public", "--subnet-range", "198.51.100.0/24",
           "--no-dhcp", "public-v4")
    expect_error(admin.post("/v2.0/networks", {"network": {"router:external": True, "is_default": True}}),
                 409, "DefaultExternalNetworkExists")
    err = expect_error(t.get(url, params={"fields": "dry-run"}), 409, "AutoAllocationFailure")
    assert "No default subnetpools defined" in err["message"]
    cli.ok("subnet", "pool", "create", "--default", "--share", "--pool-prefix", "10.200.0.0/16",
           "--default-prefix-length", "26", "default-v4")
    dry = expect(t.get(url, params={"fields": "dry-run"}), 200)["auto_allocated_topology"]
    assert dry["id"] == "dry-run=pass" and t.list_own("networks") == []
    # openstacksdk's check, and the CLI's (noauth: the default project,
    # `None` in the path, which is the caller's).
    conn = sdk_connection(fresh_server.url, project=t.project, roles="member")
    assert conn.network.validate_auto_allocated_topology(t.project).id == "dry-run=pass"
    cli.ok("network", "auto", "allocated", "topology", "create", "--check-resources")
    assert admin.list("networks", {"name": "auto_allocated_network"}) == []

    made = expect(t.get(url), 200)["auto_allocated_topology"]
    assert made["project_id"] == t.project
    net = t.show("networks", made["id"])
    assert net["name"] == "auto_allocated_network" and net["project_id"] == t.project
    (sub,) = t.list("subnets", {"network_id": net["id"]})
    assert sub["name"] == "auto_allocated_subnet_v4" and sub["cidr"].endswith("/26")
    (router,) = t.list_own("routers")
    assert router["name"] == "auto_allocated_router"
    assert router["external_gateway_info"]["network_id"] == public["id"]
    assert [p["fixed_ips"][0]["subnet_id"] for p in
            t.list("ports", {"device_id": router["id"], "device_owner": "network:router_interface"})
            ] == [sub["id"]]
    # Asked again: the same one.
    assert expect(t.get(url), 200)["auto_allocated_topology"]["id"] == made["id"]
    # Another project's is not a member's to make or delete.
    other = fresh_server.api(project=uniq("p"), roles="member")
    expect_error(other.get(url), 403, "PolicyNotAuthorized")
    expect_error(other.delete(url), 403, "PolicyNotAuthorized")

    expect(t.delete(url), 204)
    assert t.list_own("networks") == [] and t.list_own("routers") == []
    assert t.list_own("subnets") == []
    expect(t.delete(url), 204)  # nothing left to delete is no error

    # openstacksdk, as Nova's "get me a network" calls it.
    top = conn.network.get_auto_allocated_topology(t.project)
    assert t.show("networks", top.id)["name"] == "auto_allocated_network"
    conn.network.delete_auto_allocated_topology(t.project)
    expect_error(t.get(f"/v2.0/networks/{top.id}"), 404, "NetworkNotFound")
