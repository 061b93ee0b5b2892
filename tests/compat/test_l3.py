"""Routers, external networks, floating IPs and port forwardings: raw HTTP
for every error Neutron gives, then the `openstack` CLI and openstacksdk
for the workflows tenants run. Shapes as in shared/neutron/22-26, 41-43.
"""

from __future__ import annotations

import ipaddress

import pytest

from helpers import expect, expect_error, uniq


@pytest.fixture
def external(api):
    """An external network (admin-made) with an IPv4 subnet."""
    net = api.network(**{"router:external": True})
    sub = api.subnet(net["id"], "203.0.113.0/24")
    return net, sub


def _world(tenant, external):
    """A tenant's network+subnet, a VM port, and a router with a gateway."""
    t = tenant()
    net, sub = t.network_with_subnet("10.20.30.0/24")
    vm = t.port(net["id"])
    router = t.create("routers", name=uniq("r"), external_gateway_info={"network_id": external[0]["id"]})
    return t, net, sub, vm, router


def test_router_with_gateway_has_neutrons_shape(tenant, external):
    t, _, _, _, router = _world(tenant, external)
    gw = router["external_gateway_info"]
    assert gw["network_id"] == external[0]["id"] and gw["enable_snat"] is True
    (ip,) = gw["external_fixed_ips"]
    assert ip["subnet_id"] == external[1]["id"]
    assert ipaddress.ip_address(ip["ip_address"]) in ipaddress.ip_network("203.0.113.0/24")
    assert router["status"] == "ACTIVE" and router["routes"] == []
    assert router["admin_state_up"] is True and router["availability_zone_hints"] == []
    # distributed/ha are admin-only attributes in Neutron's policy.
    assert "distributed" not in router and "ha" not in router
    # The gateway port belongs to no project: the tenant does not see it.
    assert not t.list("ports", {"device_id": router["id"]})


def test_routers_are_distributed_and_say_so_to_admins(tenant, api, cli):
    """The `dvr` extension: every vnet router routes on the sending host."""
    t = tenant()
    r = t.create("routers", name=uniq("r"))
    admin_view = api.show("routers", r["id"])
    assert admin_view["distributed"] is True and admin_view["ha"] is False
    # The flags are the operator's, as in Neutron's policy.
    for flag in ("distributed", "ha"):
        expect_error(t.post("/v2.0/routers", {"router": {flag: True}}), 403, "PolicyNotAuthorized")
    name = uniq("r")
    made = cli.json("router", "create", "--distributed", "--no-ha", name)
    assert cli.json("router", "show", made["id"])["distributed"] is True
    # What vnet does not do is refused, and changes nothing.
    expect_error(api.post("/v2.0/routers", {"router": {"distributed": False}}), 400, "InvalidInput")
    expect_error(api.put(f"/v2.0/routers/{r['id']}", {"router": {"ha": True}}), 400, "InvalidInput")
    assert api.show("routers", r["id"])["revision_number"] == r["revision_number"]


def test_floatingip_pools_are_the_external_ipv4_subnets(tenant, api, external):
    net, v4 = external
    api.subnet(net["id"], "2001:db8:77::/64")  # no floating IPs come from IPv6
    t = tenant()
    internal, _ = t.network_with_subnet("10.21.0.0/24")
    pools = expect(t.get("/v2.0/floatingip_pools"), 200)["floatingip_pools"]
    mine = [p for p in pools if p["network_id"] == net["id"]]
    assert mine == [
        {
            "subnet_id": v4["id"],
            "subnet_name": v4["name"],
            "network_id": net["id"],
            "cidr": "203.0.113.0/24",
            "project_id": v4["project_id"],
            "tenant_id": v4["project_id"],
        }
    ]
    assert not [p for p in pools if p["network_id"] == internal["id"]]
    only = t.get("/v2.0/floatingip_pools", params={"subnet_id": v4["id"], "fields": "cidr"})
    assert expect(only, 200)["floatingip_pools"] == [{"cidr": "203.0.113.0/24"}]


def test_subnet_service_types_keep_floating_ips_and_gateways_apart(api, cli, tenant):
    """subnet-service-types, as operators use it: floating IPs from one
    subnet of the external network, router gateways from another."""
    ext = api.network(**{"router:external": True})
    fips = cli.json("subnet", "create", "--network", ext["id"], "--subnet-range", "192.0.2.0/26",
                    "--service-type", "network:floatingip", "--no-dhcp", uniq("fip-only"))
    assert fips["service_types"] == ["network:floatingip"]
    rest = api.subnet(ext["id"], "192.0.2.64/26", enable_dhcp=False)
    assert rest["service_types"] == []
    t = tenant()
    fip = t.create("floatingips", floating_network_id=ext["id"])
    assert ipaddress.ip_address(fip["floating_ip_address"]) in ipaddress.ip_network("192.0.2.0/26")
    router = t.create("routers", name=uniq("r"), external_gateway_info={"network_id": ext["id"]})
    (gw,) = router["external_gateway_info"]["external_fixed_ips"]
    assert gw["subnet_id"] == rest["id"]
    # A network whose subnets all serve others has nothing for a VM.
    net = api.network()
    api.subnet(net["id"], "10.88.0.0/24", service_types=["network:router_interface"])
    expect_error(api.post("/v2.0/ports", {"port": {"network_id": net["id"], "device_owner": "compute:nova"}}),
                 400, "IpAddressGenerationFailureNoMatchingSubnet")
    expect_error(api.post("/v2.0/subnets", {"subnet": {"network_id": net["id"], "ip_version": 4,
                                                       "cidr": "10.89.0.0/24", "service_types": ["bogus"]}}),
                 400, "InvalidSubnetServiceType")
    # Service types change with an update; then VMs get addresses there.
    only = api.list("subnets", {"network_id": net["id"]})[0]
    assert api.update("subnets", only["id"], service_types=[])["service_types"] == []
    assert api.port(net["id"], device_owner="compute:nova")["fixed_ips"][0]["subnet_id"] == only["id"]


def test_external_networks_are_admin_made_and_everyone_sees_them(tenant, external):
    t = tenant()
    expect_error(
        t.post("/v2.0/networks", {"network": {"router:external": True}}), 403, "PolicyNotAuthorized"
    )
    assert t.show("networks", external[0]["id"])["router:external"] is True
    assert external[0]["id"] in {n["id"] for n in t.list("networks", {"router:external": "true"})}
    # A gateway must be on an external network.
    net, _ = t.network_with_subnet("10.1.0.0/24")
    expect_error(
        t.post("/v2.0/routers", {"router": {"external_gateway_info": {"network_id": net["id"]}}}),
        400,
        "BadRequest",
    )
    # enable_snat is the operator's to choose.
    body = {"router": {"external_gateway_info": {"network_id": external[0]["id"], "enable_snat": False}}}
    expect_error(t.post("/v2.0/routers", body), 403, "PolicyNotAuthorized")


def test_interfaces_by_subnet_and_by_port_and_their_errors(tenant, external):
    t, net, sub, _, router = _world(tenant, external)
    rid = router["id"]
    action = f"/v2.0/routers/{rid}"
    expect_error(t.put(f"{action}/add_router_interface", {}), 400, "BadRequest")
    expect_error(
        t.put(f"{action}/add_router_interface", {"subnet_id": sub["id"], "port_id": "x"}), 400, "BadRequest"
    )
    info = expect(t.put(f"{action}/add_router_interface", {"subnet_id": sub["id"]}), 200)
    assert set(info) >= {"id", "tenant_id", "project_id", "port_id", "network_id", "subnet_id", "subnet_ids"}
    assert info["id"] == rid and info["subnet_ids"] == [sub["id"]] and info["network_id"] == net["id"]
    port = t.show("ports", info["port_id"])
    assert port["device_owner"] == "network:router_interface" and port["device_id"] == rid
    assert port["fixed_ips"][0]["ip_address"] == sub["gateway_ip"]
    expect_error(t.put(f"{action}/add_router_interface", {"subnet_id": sub["id"]}), 400, "BadRequest")
    # In use: router, subnet, network, and the interface port itself.
    expect_error(t.delete(f"/v2.0/routers/{rid}"), 409, "RouterInUse")
    expect_error(t.delete(f"/v2.0/subnets/{sub['id']}"), 409, "SubnetInUse")
    expect_error(t.delete(f"/v2.0/networks/{net['id']}"), 409, "NetworkInUse")
    expect_error(t.delete(f"/v2.0/ports/{info['port_id']}"), 409, "L3PortInUse")

    # By port: a port of the tenant's on a second subnet.
    net2, sub2 = t.network_with_subnet("10.20.31.0/24")
    p2 = t.port(net2["id"])
    info2 = expect(t.put(f"{action}/add_router_interface", {"port_id": p2["id"]}), 200)
    assert info2["port_id"] == p2["id"]
    assert t.show("ports", p2["id"])["device_owner"] == "network:router_interface"
    # A port already attached to something is in use.
    p3 = t.port(net2["id"], device_id="vm-1", device_owner="compute:nova")
    expect_error(t.put(f"{action}/add_router_interface", {"port_id": p3["id"]}), 409, "PortInUse")
    # Overlapping subnets on one router are refused.
    net4, sub4 = t.network_with_subnet("10.20.30.0/25")
    expect_error(t.put(f"{action}/add_router_interface", {"subnet_id": sub4["id"]}), 400, "BadRequest")

    # Remove: unknown interface, then both real ones.
    expect_error(
        t.put(f"{action}/remove_router_interface", {"subnet_id": sub4["id"]}),
        404,
        "RouterInterfaceNotFoundForSubnet",
    )
    expect_error(
        t.put(f"{action}/remove_router_interface", {"port_id": p3["id"]}), 404, "RouterInterfaceNotFound"
    )
    out = expect(t.put(f"{action}/remove_router_interface", {"subnet_id": sub["id"]}), 200)
    assert out["port_id"] == info["port_id"]
    expect(t.get(f"/v2.0/ports/{info['port_id']}"), 404)
    expect(t.put(f"{action}/remove_router_interface", {"port_id": p2["id"]}), 200)
    t.remove("routers", rid)
    # Another project's router is not there at all.
    other = tenant()
    expect_error(
        other.put(f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": sub2["id"]}),
        404,
        "RouterNotFound",
    )


def test_floating_ip_allocate_associate_and_errors(tenant, external):
    t, net, sub, vm, router = _world(tenant, external)
    ext_id = external[0]["id"]
    # Not reachable until the subnet is on a router with a gateway there.
    expect_error(
        t.post("/v2.0/floatingips", {"floatingip": {"floating_network_id": ext_id, "port_id": vm["id"]}}),
        404,
        "ExternalGatewayForFloatingIPNotFound",
    )
    expect_error(
        t.post("/v2.0/floatingips", {"floatingip": {"floating_network_id": net["id"]}}), 400, "BadRequest"
    )
    expect_error(
        t.post("/v2.0/floatingips", {"floatingip": {"floating_network_id": "nope"}}), 404, "NetworkNotFound"
    )
    expect(t.put(f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]}), 200)
    fip = t.create("floatingips", floating_network_id=ext_id, port_id=vm["id"])
    assert fip["router_id"] == router["id"] and fip["port_id"] == vm["id"]
    assert fip["fixed_ip_address"] == vm["fixed_ips"][0]["ip_address"]
    assert fip["status"] == "DOWN" and fip["port_forwardings"] == [] and "name" not in fip
    assert fip["port_details"]["mac_address"] == vm["mac_address"]
    assert ipaddress.ip_address(fip["floating_ip_address"]) in ipaddress.ip_network("203.0.113.0/24")
    # One floating IP per fixed IP and external network.
    expect_error(
        t.post("/v2.0/floatingips", {"floatingip": {"floating_network_id": ext_id, "port_id": vm["id"]}}),
        409,
        "FloatingIPPortAlreadyAssociated",
    )
    # What the association pins.
    expect_error(
        t.put(f"/v2.0/routers/{router['id']}/remove_router_interface", {"subnet_id": sub["id"]}),
        409,
        "RouterInterfaceInUseByFloatingIP",
    )
    expect_error(
        t.put(f"/v2.0/routers/{router['id']}", {"router": {"external_gateway_info": {}}}),
        409,
        "RouterExternalGatewayInUseByFloatingIp",
    )
    # A chosen address that is taken, and one outside every subnet.
    expect_error(
        t.post(
            "/v2.0/floatingips",
            {"floatingip": {"floating_network_id": ext_id, "floating_ip_address": fip["floating_ip_address"]}},
        ),
        409,
        "IpAddressAlreadyAllocated",
    )
    # Disassociate, re-associate by update, delete the port: let go.
    assert t.update("floatingips", fip["id"], port_id=None)["port_id"] is None
    again = t.update("floatingips", fip["id"], port_id=vm["id"])
    assert again["router_id"] == router["id"]
    t.remove("ports", vm["id"])
    after = t.show("floatingips", fip["id"])
    assert after["port_id"] is None and after["fixed_ip_address"] is None
    t.remove("floatingips", fip["id"])
    expect_error(t.get(f"/v2.0/floatingips/{fip['id']}"), 404, "FloatingIPNotFound")
    # Another project cannot associate its floating IP with this port.
    other = tenant()
    theirs = other.create("floatingips", floating_network_id=ext_id)
    mine = t.port(net["id"])
    expect_error(other.put(f"/v2.0/floatingips/{theirs['id']}", {"floatingip": {"port_id": mine["id"]}}), 404, "PortNotFound")


def test_extra_routes_replace_add_remove(tenant, external):
    t, _, sub, _, router = _world(tenant, external)
    rid = router["id"]
    route = {"destination": "192.168.0.0/16", "nexthop": "10.20.30.9"}
    expect_error(t.put(f"/v2.0/routers/{rid}", {"router": {"routes": [route]}}), 400, "InvalidRoutes")
    expect(t.put(f"/v2.0/routers/{rid}/add_router_interface", {"subnet_id": sub["id"]}), 200)
    assert t.update("routers", rid, routes=[route])["routes"] == [route]
    other = {"destination": "172.16.0.0/12", "nexthop": "10.20.30.10"}
    added = expect(t.put(f"/v2.0/routers/{rid}/add_extraroutes", {"router": {"routes": [other]}}), 200)
    assert sorted(r["destination"] for r in added["router"]["routes"]) == ["172.16.0.0/12", "192.168.0.0/16"]
    expect_error(
        t.put(f"/v2.0/routers/{rid}/remove_router_interface", {"subnet_id": sub["id"]}),
        409,
        "RouterInterfaceInUseByRoute",
    )
    removed = expect(t.put(f"/v2.0/routers/{rid}/remove_extraroutes", {"router": {"routes": [route]}}), 200)
    assert removed["router"]["routes"] == [other]
    too_many = [{"destination": f"192.168.{i}.0/24", "nexthop": "10.20.30.9"} for i in range(31)]
    expect_error(t.put(f"/v2.0/routers/{rid}", {"router": {"routes": too_many}}), 400, "RoutesExhausted")


def test_port_forwardings(tenant, external):
    t, _, sub, vm, router = _world(tenant, external)
    expect(t.put(f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]}), 200)
    fip = t.create("floatingips", floating_network_id=external[0]["id"])
    base = f"/v2.0/floatingips/{fip['id']}/port_forwardings"
    body = {
        "protocol": "tcp", "external_port": 2222, "internal_port": 22, "description": "ssh",
        "internal_port_id": vm["id"], "internal_ip_address": vm["fixed_ips"][0]["ip_address"],
    }
    pf = expect(t.post(base, {"port_forwarding": body}), 201)["port_forwarding"]
    assert pf["external_port"] == 2222 and pf["internal_port"] == 22 and pf["protocol"] == "tcp"
    expect_error(t.post(base, {"port_forwarding": body}), 400, "BadRequest")
    expect_error(t.post(base, {"port_forwarding": {**body, "external_port": 70000}}), 400, None)
    assert [p["id"] for p in expect(t.get(base), 200)["port_forwardings"]] == [pf["id"]]
    shown = t.show("floatingips", fip["id"])
    assert shown["router_id"] == router["id"]
    # As Neutron with floating-ip-port-forwarding-detail and -description.
    assert shown["port_forwardings"] == [{
        "id": pf["id"], "protocol": "tcp", "external_port": 2222, "internal_port": 22,
        "internal_port_id": vm["id"], "internal_ip_address": vm["fixed_ips"][0]["ip_address"],
        "description": "ssh"}]
    expect_error(
        t.put(f"/v2.0/floatingips/{fip['id']}", {"floatingip": {"port_id": vm["id"]}}), 400, "BadRequest"
    )
    updated = expect(t.put(f"{base}/{pf['id']}", {"port_forwarding": {"external_port": 2200}}), 200)
    assert updated["port_forwarding"]["external_port"] == 2200
    expect(t.delete(f"{base}/{pf['id']}"), 204)
    expect_error(t.get(f"{base}/{pf['id']}"), 404, "PortForwardingNotFound")


def test_cli_router_and_floating_ip_workflow(cli, api, external):
    name = uniq("cli-r")
    net, sub = api.network_with_subnet("10.44.0.0/24")
    vm = api.port(net["id"])
    router = cli.json("router", "create", name)
    cli.ok("router", "set", "--external-gateway", external[0]["id"], name)
    cli.ok("router", "add", "subnet", name, sub["id"])
    shown = cli.json("router", "show", name)
    assert shown["external_gateway_info"]["network_id"] == external[0]["id"]
    assert any(i["subnet_id"] == sub["id"] for i in shown["interfaces_info"])
    fip = cli.json("floating ip", "create", "--port", vm["id"], external[0]["id"])
    assert fip["port_id"] == vm["id"] and fip["router_id"] == router["id"]
    listed = cli.json("floating ip", "list")
    assert any(f["ID"] == fip["id"] and f["Port"] == vm["id"] for f in listed)
    cli.ok("floating ip", "unset", "--port", fip["id"])
    assert api.show("floatingips", fip["id"])["port_id"] is None
    cli.ok("floating ip", "delete", fip["id"])
    cli.ok("router", "add", "route", "--route", "destination=192.168.0.0/16,gateway=10.44.0.9", name)
    assert api.show("routers", router["id"])["routes"] == [{"destination": "192.168.0.0/16", "nexthop": "10.44.0.9"}]
    cli.ok("router", "remove", "route", "--route", "destination=192.168.0.0/16,gateway=10.44.0.9", name)
    cli.ok("router", "remove", "subnet", name, sub["id"])
    cli.ok("router", "unset", "--external-gateway", name)
    cli.ok("router", "delete", name)
    expect(api.get(f"/v2.0/routers/{router['id']}"), 404)


def test_sdk_router_and_floating_ip_workflow(sdk, external):
    conn = sdk()
    net = conn.network.create_network(name=uniq("sdk-net"))
    sub = conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.55.0.0/24")
    port = conn.network.create_port(network_id=net.id)
    router = conn.network.create_router(name=uniq("sdk-r"), external_gateway_info={"network_id": external[0]["id"]})
    conn.network.add_interface_to_router(router, subnet_id=sub.id)
    fip = conn.network.create_ip(floating_network_id=external[0]["id"], port_id=port.id)
    assert fip.router_id == router.id and fip.fixed_ip_address == port.fixed_ips[0]["ip_address"]
    assert conn.network.get_ip(fip.id).port_id == port.id
    assert fip.id in {f.id for f in conn.network.ips()}
    conn.network.update_ip(fip, port_id=None)
    conn.network.delete_ip(fip)
    conn.network.remove_interface_from_router(router, subnet_id=sub.id)
    conn.network.delete_router(router)
    assert conn.network.find_router(router.id) is None
