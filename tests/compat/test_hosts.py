"""Hosts and agents: registration and heartbeat at /vnet/v1/hosts, Neutron's
/v2.0/agents (and `openstack network agent list`), and port status driven by
the agents' reports and their liveness."""

from __future__ import annotations

import json
import re
import time

from helpers import REPO_ROOT, expect, expect_error, uniq

# The agent protocol's version, read from its one definition
# (compiler::protocol::PROTOCOL_VERSION) so that a bump never strands this suite.
PROTOCOL_VERSION = int(
    re.search(
        r"pub const PROTOCOL_VERSION: u32 = (\d+);",
        (REPO_ROOT / "crates/compiler/src/protocol.rs").read_text(),
    ).group(1)
)


def registration(
    name: str,
    ip: str = "192.0.2.10",
    version: int = PROTOCOL_VERSION,
    physical_networks: list[str] | None = None,
    gateway: bool = False,
    zone: str | None = None,
) -> dict:
    reg = {
        "protocol_version": version,
        "name": name,
        "underlay_ip": ip,
        "capabilities": ["linux"],
        "physical_networks": physical_networks or [],
        "gateway": gateway,
    }
    if zone is not None:
        reg["availability_zone"] = zone
    return reg


def beat(api, name: str, **kw) -> dict:
    return expect(api.put(f"/vnet/v1/hosts/{name}", registration(name, **kw)), 200)["host"]


def wait_for(condition, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_a_heartbeat_registers_a_host_and_its_agent(api, cli):
    name = uniq("host")
    host = beat(api, name, ip="192.0.2.21")
    assert host["alive"] is True and host["underlay_ip"] == "192.0.2.21"
    hosts = expect(api.get("/vnet/v1/hosts"), 200)["hosts"]
    assert name in {h["name"] for h in hosts}

    agents = expect(api.get("/v2.0/agents", params={"host": name}), 200)["agents"]
    assert len(agents) == 1 and agents[0]["alive"] is True
    assert agents[0]["configurations"]["underlay_ip"] == "192.0.2.21"
    shown = expect(api.get(f"/v2.0/agents/{agents[0]['id']}"), 200)["agent"]
    assert shown["host"] == name

    listed = cli.json("network", "agent", "list", "--host", name)
    assert [a["Host"] for a in listed] == [name]


def test_hosts_and_agents_are_for_admins(server, api):
    name = uniq("host")
    beat(api, name)
    tenant = server.api(project=uniq("p"), roles="member")
    expect_error(tenant.get("/vnet/v1/hosts"), 403, "PolicyNotAuthorized")
    expect_error(tenant.put(f"/vnet/v1/hosts/{name}", registration(name)), 403, "PolicyNotAuthorized")
    # As Neutron: a member lists no agents and finds none.
    assert tenant.get("/v2.0/agents").json() == {"agents": []}
    agent = api.get("/v2.0/agents", params={"host": name}).json()["agents"][0]
    expect_error(tenant.get(f"/v2.0/agents/{agent['id']}"), 404, "AgentNotFound")


def test_bad_registrations_are_refused(api):
    name = uniq("host")
    expect_error(api.put(f"/vnet/v1/hosts/{name}", registration(name, version=99)), 409, "ProtocolVersionMismatch")
    expect_error(api.put(f"/vnet/v1/hosts/{name}", registration("other")), 400, "HTTPBadRequest")
    expect_error(api.put(f"/vnet/v1/hosts/{name}", {"name": name}), 400, "HTTPBadRequest")
    expect_error(api.get(f"/vnet/v1/hosts/{name}"), 404, "HostNotFound")
    expect_error(api.put(f"/vnet/v1/hosts/{name}/ports", {"revision": 0, "wired": []}), 409, "HostNotAlive")


def test_ports_follow_their_agents_reports_and_liveness(api):
    host = uniq("host")
    beat(api, host)
    net, _ = api.network_with_subnet("10.31.0.0/24")
    p1 = api.port(net["id"], **{"binding:host_id": host})
    p2 = api.port(net["id"], **{"binding:host_id": host})
    assert p1["status"] == "DOWN"

    changed = expect(api.put(f"/vnet/v1/hosts/{host}/ports", {"revision": 0, "wired": [p1["id"]]}), 200)
    assert changed["changed"] == 1
    assert api.show("ports", p1["id"])["status"] == "ACTIVE"
    assert api.show("ports", p2["id"])["status"] == "DOWN"

    # Moving a wired port to another host: DOWN until that host wires it.
    api.update("ports", p1["id"], **{"binding:host_id": uniq("elsewhere")})
    assert api.show("ports", p1["id"])["status"] == "DOWN"
    api.update("ports", p1["id"], **{"binding:host_id": host})
    expect(api.put(f"/vnet/v1/hosts/{host}/ports", {"revision": 0, "wired": [p1["id"]]}), 200)
    assert api.show("ports", p1["id"])["status"] == "ACTIVE"

    # The agent goes silent: after its missed heartbeats the host is dead and
    # its ports DOWN; a heartbeat brings the host (not the ports) back.
    wait_for(lambda: api.show("ports", p1["id"])["status"] == "DOWN", what="port DOWN after the agent died")
    agent = expect(api.get("/v2.0/agents", params={"host": host}), 200)["agents"][0]
    assert agent["alive"] is False
    assert beat(api, host)["alive"] is True
    assert api.show("ports", p1["id"])["status"] == "DOWN"


def test_registrations_survive_a_restart(fresh_server):
    api = fresh_server.api()
    name = uniq("host")
    beat(api, name, ip="192.0.2.77")
    fresh_server.restart()
    api = fresh_server.api()
    host = expect(api.get(f"/vnet/v1/hosts/{name}"), 200)["host"]
    assert host["underlay_ip"] == "192.0.2.77"
    # A restart is not the agent's death: the host keeps its stored liveness
    # (the stopping server marked nothing dead) for a full heartbeat period,
    # then, still silent, it is dead; a heartbeat brings it back.
    assert host["alive"] is True, "a restart alone killed the host"
    wait_for(
        lambda: expect(api.get(f"/vnet/v1/hosts/{name}"), 200)["host"]["alive"] is False,
        what="the silent host dead after its missed heartbeats",
    )
    assert beat(api, name, ip="192.0.2.77")["alive"] is True


def _gateway_host(api, viewer: str, router_id: str):
    """The gateway host of a router, as the compiler tells `viewer` (the
    first line of its state stream: a snapshot), if `viewer` holds it."""
    with api.session.get(f"{api.base}/vnet/v1/hosts/{viewer}/state", stream=True, timeout=10) as r:
        assert r.status_code == 200, r.text
        snapshot = json.loads(next(r.iter_lines()))
    spec = snapshot["state"].get("routers", {}).get(router_id) or {}
    return (spec.get("gateway") or {}).get("host")


def test_an_agent_set_down_takes_no_gateways_and_a_deleted_one_is_forgotten(api, cli):
    """`openstack network agent set --disable` drains a gateway host (its
    routers' gateways move); `agent delete` forgets a host until it registers
    again."""
    physnet = uniq("phys")
    hosts = [uniq("gw"), uniq("gw")]
    for h in hosts:
        beat(api, h, physical_networks=[physnet], gateway=True)
    ext = api.network(**{"router:external": True, "provider:network_type": "flat",
                         "provider:physical_network": physnet})
    api.subnet(ext["id"], "198.51.100.0/24")
    router = api.create("routers", name=uniq("r"), external_gateway_info={"network_id": ext["id"]})

    def gateway():
        seen = {_gateway_host(api, h, router["id"]) for h in hosts} - {None}
        return seen.pop() if len(seen) == 1 else None

    first = wait_for(gateway, what="a gateway host")
    (other,) = set(hosts) - {first}
    agents = {a["Host"]: a["ID"] for a in cli.json("network", "agent", "list")}
    cli.ok("network", "agent", "set", "--disable", "--description", "draining", agents[first])
    shown = expect(api.get(f"/v2.0/agents/{agents[first]}"), 200)["agent"]
    assert shown["admin_state_up"] is False and shown["description"] == "draining"
    wait_for(lambda: gateway() == other, what="the gateway to move off the disabled host")
    # Its agent's next registration keeps what the operator set.
    beat(api, first, physical_networks=[physnet], gateway=True)
    assert expect(api.get(f"/v2.0/agents/{agents[first]}"), 200)["agent"]["admin_state_up"] is False
    expect_error(api.put(f"/v2.0/agents/{agents[first]}", {"agent": {"host": "x"}}), 400, None)
    cli.ok("network", "agent", "set", "--enable", agents[first])
    wait_for(lambda: gateway() == first, what="the gateway to come back")

    cli.ok("network", "agent", "delete", agents[other])
    assert other not in {a["Host"] for a in cli.json("network", "agent", "list")}
    expect_error(api.get(f"/v2.0/agents/{agents[other]}"), 404, "AgentNotFound")
    beat(api, other, physical_networks=[physnet], gateway=True)
    assert expect(api.get(f"/v2.0/agents/{agents[other]}"), 200)["agent"]["alive"] is True
    # Members can do none of it.
    member = api.__class__(api.base, project=uniq("p"), roles="member")
    expect_error(member.put(f"/v2.0/agents/{agents[first]}", {"agent": {"admin_state_up": False}}),
                 404, "AgentNotFound")
    expect_error(member.delete(f"/v2.0/agents/{agents[first]}"), 404, "AgentNotFound")


def test_availability_zones_are_where_hosts_are(api, cli, tenant):
    """Hosts register in zones; networks are in the zones of the hosts that
    carry them, routers in their gateway host's; hints must name a zone that
    offers the resource, and a router's hints choose its gateway host."""
    physnet, az_a, az_b, az_c = uniq("phys"), uniq("az"), uniq("az"), uniq("az")
    h_a, h_b, h_c = uniq("host"), uniq("host"), uniq("host")
    beat(api, h_a, physical_networks=[physnet], gateway=True, zone=az_a)
    beat(api, h_b, physical_networks=[physnet], gateway=True, zone=az_b)
    beat(api, h_c, zone=az_c)
    zones = {(z["name"], z["resource"], z["state"]) for z in
             expect(api.get("/v2.0/availability_zones"), 200)["availability_zones"]}
    assert {(az_a, "router", "available"), (az_b, "network", "available"),
            (az_c, "network", "available")} <= zones
    assert (az_c, "router", "available") not in zones
    listed = cli.json("availability", "zone", "list", "--network", "--long")
    assert {(z["Zone Name"], z["Zone Resource"]) for z in listed} >= {(az_a, "router"), (az_c, "network")}
    only = api.get("/v2.0/availability_zones", params={"resource": "router", "name": az_b})
    assert expect(only, 200)["availability_zones"] == [
        {"name": az_b, "resource": "router", "state": "available"}]
    agents = {a["host"]: a for a in expect(api.get("/v2.0/agents"), 200)["agents"]}
    assert agents[h_c]["availability_zone"] == az_c

    # Hints name a zone offering the resource.
    err = expect_error(api.post("/v2.0/networks", {"network": {"availability_zone_hints": [uniq("nowhere")]}}),
                       404, "AvailabilityZoneNotFound")
    assert "could not be found" in err["message"]
    expect_error(api.post("/v2.0/routers", {"router": {"availability_zone_hints": [az_c]}}),
                 404, "AvailabilityZoneNotFound")

    # A network is where its ports' hosts are.
    net = api.network(availability_zone_hints=[az_c])
    api.subnet(net["id"], "10.77.0.0/24")
    api.port(net["id"], **{"binding:host_id": h_c})
    assert api.show("networks", net["id"])["availability_zones"] == [az_c]

    # A router with a hint takes its gateway host in that zone, whichever
    # rendezvous would pick otherwise.
    ext = api.network(**{"router:external": True, "provider:network_type": "flat",
                         "provider:physical_network": physnet})
    api.subnet(ext["id"], "198.51.100.0/24")
    for zone in (az_a, az_b):
        r = api.create("routers", name=uniq("r"), availability_zone_hints=[zone],
                       external_gateway_info={"network_id": ext["id"]})
        wait_for(lambda: api.show("routers", r["id"])["availability_zones"] == [zone],
                 what=f"the router's gateway host in {zone}")
        assert cli.json("router", "show", r["id"])["availability_zones"] == [zone]
