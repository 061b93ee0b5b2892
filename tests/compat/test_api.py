"""Raw HTTP: what the clients don't easily reach.

Every expectation is the real Neutron v2.0 API's (shared/neutron/*.json and
Neutron's documented behaviour), except project scoping, which is vnet's
stricter noauth: X-Project-Id / X-Roles.
"""

from __future__ import annotations

import re
import uuid
from urllib.parse import parse_qs, urlparse

import pytest

from helpers import TIMESTAMP_RE, eui64, expect, expect_error, ips_of, uniq

MISSING = "00000000-0000-0000-0000-000000000000"


# ---------------------------------------------------------------------------
# Version documents and extensions
# ---------------------------------------------------------------------------


def test_version_document_at_root(api):
    resp = api.get("/")
    body = expect(resp, 200)
    assert resp.headers["Content-Type"].startswith("application/json")
    versions = body["versions"]
    assert [v["id"] for v in versions] == ["v2.0"]
    v = versions[0]
    assert v["status"] == "CURRENT"
    self_links = [link["href"] for link in v["links"] if link["rel"] == "self"]
    # The href must point back at this server: clients build their endpoint from it.
    assert [h.rstrip("/") for h in self_links] == [api.base + "/v2.0"]


@pytest.mark.parametrize("path", ["/v2.0", "/v2.0/"])
def test_v2_resource_document(api, path):
    body = expect(api.get(path), 200)
    by_collection = {r["collection"]: r for r in body["resources"]}
    for collection, name in [("networks", "network"), ("subnets", "subnet"), ("ports", "port")]:
        res = by_collection[collection]
        assert res["name"] == name
        hrefs = [link["href"] for link in res["links"] if link["rel"] == "self"]
        assert hrefs == [f"{api.base}/v2.0/{collection}"]


def test_extensions_list_what_is_implemented(api):
    body = expect(api.get("/v2.0/extensions"), 200)
    exts = body["extensions"]
    for ext in exts:
        assert set(ext) >= {"name", "alias", "description", "updated", "links"}, ext
    aliases = [e["alias"] for e in exts]
    assert len(aliases) == len(set(aliases)), "duplicate aliases"
    implemented = {
        "security-group",
        "pagination",
        "sorting",
        "project-id",
        "standard-attr-description",
        "standard-attr-revisions",
        "standard-attr-timestamp",
        "standard-attr-tag",
        "revision-if-match",
        "rbac-policies",
        "rbac-security-groups",
        "rbac-subnetpool",
        "port-security",
        "allowed-address-pairs",
        "binding",
        "provider",
        "net-mtu",
        "agent",
        "router",
        "external-net",
        "ext-gw-mode",
        "extraroute",
        "extraroute-atomic",
        "fip-port-details",
        "floating-ip-port-forwarding",
        "dvr",
        "service-type",
        "tag",
        "quota-check-limit",
        "floatingip-pools",
        "security-groups-shared-filtering",
        "subnet-service-types",
        "floating-ip-port-forwarding-description",
        "floating-ip-port-forwarding-detail",
        "port-mac-address-regenerate",
        "tag-ports-during-bulk-creation",
        "metering",
        "subnet_allocation",
        "security-groups-default-rules",
        "auto-allocated-topology",
        "address-group",
        "security-groups-remote-address-group",
    }
    assert implemented <= set(aliases), f"missing: {sorted(implemented - set(aliases))}"
    # Not part of vnet yet, so not advertised ("exactly what is implemented").
    absent = {"trunk", "l3-ha", "qos", "segment", "l3-flavors"}
    assert not absent & set(aliases), f"advertised but not implemented: {absent & set(aliases)}"


def test_extension_show(api):
    body = expect(api.get("/v2.0/extensions/security-group"), 200)
    assert body["extension"]["alias"] == "security-group"
    assert api.get("/v2.0/extensions/trunk").status_code == 404


def test_unknown_collection_404(api):
    expect_error(api.get("/v2.0/nosuchthings"), 404, "HTTPNotFound")


def test_method_not_allowed_405(api):
    net = api.network()
    resp = api.request("PATCH", f"/v2.0/networks/{net['id']}", {"network": {}})
    expect_error(resp, 405, "HTTPMethodNotAllowed")


# ---------------------------------------------------------------------------
# Resource shapes and defaults
# ---------------------------------------------------------------------------


def test_network_defaults(api, default_project):
    name = uniq("net")
    net = api.create("networks", name=name)
    assert net["name"] == name
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", net["id"])
    assert net["project_id"] == net["tenant_id"] == default_project
    assert net["admin_state_up"] is True
    assert net["status"] == "ACTIVE"
    assert net["subnets"] == []
    assert net["shared"] is False
    assert net["router:external"] is False
    assert net["port_security_enabled"] is True
    assert net["mtu"] == 1450
    assert net["provider:network_type"] == "vxlan"
    assert isinstance(net["provider:segmentation_id"], int)
    assert net["description"] == ""
    assert net["tags"] == []
    assert isinstance(net["revision_number"], int)
    assert re.match(TIMESTAMP_RE, net["created_at"]), net["created_at"]
    assert re.match(TIMESTAMP_RE, net["updated_at"]), net["updated_at"]
    shown = api.show("networks", net["id"])
    for key in ["id", "name", "project_id", "revision_number", "created_at", "mtu"]:
        assert shown[key] == net[key], key


def test_networks_get_distinct_vnis(api):
    a, b = api.network(), api.network()
    assert a["provider:segmentation_id"] != b["provider:segmentation_id"]


def test_subnet_defaults_and_network_subnets(api):
    net = api.network()
    before = api.show("networks", net["id"])["revision_number"]
    sub = api.subnet(net["id"], "10.20.30.0/24", dns_nameservers=["10.20.30.53"])
    assert sub["network_id"] == net["id"]
    assert sub["ip_version"] == 4
    assert sub["cidr"] == "10.20.30.0/24"
    assert sub["gateway_ip"] == "10.20.30.1"
    assert sub["allocation_pools"] == [{"start": "10.20.30.2", "end": "10.20.30.254"}]
    assert sub["enable_dhcp"] is True
    assert sub["ipv6_ra_mode"] is None and sub["ipv6_address_mode"] is None
    assert sub["dns_nameservers"] == ["10.20.30.53"]
    assert sub["host_routes"] == []
    assert sub["project_id"] == net["project_id"]
    assert sub["tags"] == [] and sub["description"] == ""
    shown = api.show("networks", net["id"])
    assert shown["subnets"] == [sub["id"]]
    assert shown["revision_number"] > before, "adding a subnet bumps the network revision"


def test_ipv6_slaac_subnet_defaults(api):
    net = api.network()
    sub = api.subnet(
        net["id"], "fd00:20:30::/64", ipv6_ra_mode="slaac", ipv6_address_mode="slaac"
    )
    assert sub["ip_version"] == 6
    assert sub["gateway_ip"] == "fd00:20:30::"
    assert sub["allocation_pools"] == [
        {"start": "fd00:20:30::1", "end": "fd00:20:30:0:ffff:ffff:ffff:ffff"}
    ]
    assert sub["ipv6_ra_mode"] == "slaac" and sub["ipv6_address_mode"] == "slaac"


def test_port_defaults(api):
    net, sub = api.network_with_subnet("10.1.0.0/24")
    port = api.port(net["id"])
    assert port["network_id"] == net["id"]
    assert port["status"] == "DOWN"
    assert port["admin_state_up"] is True
    assert port["name"] == "" and port["description"] == ""
    assert port["device_id"] == "" and port["device_owner"] == ""
    assert re.fullmatch(r"fa:16:3e(:[0-9a-f]{2}){3}", port["mac_address"]), port["mac_address"]
    assert len(port["fixed_ips"]) == 1
    fip = port["fixed_ips"][0]
    assert fip["subnet_id"] == sub["id"]
    assert fip["ip_address"].startswith("10.1.0.")
    assert fip["ip_address"] not in ("10.1.0.0", "10.1.0.1", "10.1.0.255")
    assert port["binding:host_id"] == ""
    assert port["binding:vif_type"] == "unbound"
    assert port["binding:vnic_type"] == "normal"
    assert port["allowed_address_pairs"] == []
    assert port["port_security_enabled"] is True
    assert port["tags"] == []
    assert port["project_id"] == port["tenant_id"] == net["project_id"]
    default_sg = [g for g in api.list("security-groups", {"name": "default", "project_id": net["project_id"]})]
    assert len(default_sg) == 1
    assert port["security_groups"] == [default_sg[0]["id"]]


def test_port_on_network_without_subnet_has_no_ips(api):
    net = api.network()
    port = api.port(net["id"])
    assert port["fixed_ips"] == []


def test_ports_get_distinct_ips_and_macs(api):
    net, _ = api.network_with_subnet("10.2.0.0/24")
    ports = [api.port(net["id"]) for _ in range(5)]
    assert len({ips_of(p)[0] for p in ports}) == 5
    assert len({p["mac_address"] for p in ports}) == 5


def test_port_on_v4_and_slaac_v6_gets_eui64(api):
    net, v4 = api.network_with_subnet("10.20.31.0/24")
    v6 = api.subnet(net["id"], "fd00:20:31::/64", ipv6_ra_mode="slaac", ipv6_address_mode="slaac")
    port = api.port(net["id"])
    by_subnet = {f["subnet_id"]: f["ip_address"] for f in port["fixed_ips"]}
    assert set(by_subnet) == {v4["id"], v6["id"]}
    assert by_subnet[v6["id"]] == eui64("fd00:20:31::/64", port["mac_address"])
    # Asking for a v4 address only still gets the SLAAC address (recorded 15).
    port2 = api.port(net["id"], fixed_ips=[{"subnet_id": v4["id"], "ip_address": "10.20.31.10"}])
    by_subnet2 = {f["subnet_id"]: f["ip_address"] for f in port2["fixed_ips"]}
    assert by_subnet2 == {
        v4["id"]: "10.20.31.10",
        v6["id"]: eui64("fd00:20:31::/64", port2["mac_address"]),
    }


def test_port_fixed_ip_by_subnet_and_by_address(api):
    net, sub = api.network_with_subnet("10.3.0.0/24")
    p1 = api.port(net["id"], fixed_ips=[{"subnet_id": sub["id"]}])
    assert p1["fixed_ips"][0]["subnet_id"] == sub["id"]
    p2 = api.port(net["id"], fixed_ips=[{"ip_address": "10.3.0.77"}])
    assert p2["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "10.3.0.77"}]


def test_custom_allocation_pool(api):
    net, sub = api.network_with_subnet(
        "10.4.0.0/24", allocation_pools=[{"start": "10.4.0.10", "end": "10.4.0.12"}]
    )
    assert sub["allocation_pools"] == [{"start": "10.4.0.10", "end": "10.4.0.12"}]
    got = sorted(ips_of(api.port(net["id"]))[0] for _ in range(3))
    assert got == ["10.4.0.10", "10.4.0.11", "10.4.0.12"]
    resp = api.post("/v2.0/ports", {"port": {"network_id": net["id"]}})
    expect_error(resp, 409, "IpAddressGenerationFailure")


def test_subnet_gateway_variants(api):
    net = api.network()
    no_gw = api.subnet(net["id"], "10.16.0.0/24", gateway_ip=None)
    assert no_gw["gateway_ip"] is None
    assert no_gw["allocation_pools"] == [{"start": "10.16.0.1", "end": "10.16.0.254"}]
    net2 = api.network()
    high_gw = api.subnet(net2["id"], "10.17.0.0/24", gateway_ip="10.17.0.254")
    assert high_gw["gateway_ip"] == "10.17.0.254"
    assert high_gw["allocation_pools"] == [{"start": "10.17.0.1", "end": "10.17.0.253"}]


def test_port_explicit_mac_and_mac_in_use_409(api):
    net, _ = api.network_with_subnet("10.18.0.0/24")
    port = api.port(net["id"], mac_address="fa:16:3e:00:00:01")
    assert port["mac_address"] == "fa:16:3e:00:00:01"
    resp = api.post("/v2.0/ports", {"port": {"network_id": net["id"], "mac_address": "fa:16:3e:00:00:01"}})
    expect_error(resp, 409, "MacAddressInUse")
    assert len(api.list("ports", {"network_id": net["id"]})) == 1
    # The same MAC on another network is fine.
    other, _ = api.network_with_subnet("10.19.0.0/24")
    assert api.port(other["id"], mac_address="fa:16:3e:00:00:01")["mac_address"] == "fa:16:3e:00:00:01"


def test_port_security_disabled(api):
    net = api.network(port_security_enabled=False)
    api.subnet(net["id"], "10.25.0.0/24")
    assert net["port_security_enabled"] is False
    port = api.port(net["id"])
    assert port["port_security_enabled"] is False  # inherited from the network
    assert port["security_groups"] == []
    net2, _ = api.network_with_subnet("10.26.0.0/24")
    assert api.port(net2["id"], port_security_enabled=False)["security_groups"] == []
    sg = api.security_group()
    resp = api.post(
        "/v2.0/ports",
        {"port": {"network_id": net2["id"], "port_security_enabled": False, "security_groups": [sg["id"]]}},
    )
    expect_error(resp, 400, "PortSecurityAndIPRequiredForSecurityGroups")


def test_port_delete_releases_ip(api):
    net, sub = api.network_with_subnet("10.5.0.0/24")
    fixed = [{"subnet_id": sub["id"], "ip_address": "10.5.0.50"}]
    port = api.port(net["id"], fixed_ips=fixed)
    api.remove("ports", port["id"])
    expect_error(api.get(f"/v2.0/ports/{port['id']}"), 404, "PortNotFound")
    again = api.port(net["id"], fixed_ips=fixed)
    assert ips_of(again) == ["10.5.0.50"]


def test_port_update_fixed_ip_releases_old(api):
    net, sub = api.network_with_subnet("10.6.0.0/24")
    port = api.port(net["id"], fixed_ips=[{"subnet_id": sub["id"], "ip_address": "10.6.0.10"}])
    upd = api.update(
        "ports", port["id"], fixed_ips=[{"subnet_id": sub["id"], "ip_address": "10.6.0.11"}]
    )
    assert ips_of(upd) == ["10.6.0.11"]
    other = api.port(net["id"], fixed_ips=[{"subnet_id": sub["id"], "ip_address": "10.6.0.10"}])
    assert ips_of(other) == ["10.6.0.10"]


def test_port_update_allowed_address_pairs_and_device(api):
    net, _ = api.network_with_subnet("10.7.0.0/24")
    port = api.port(net["id"], name="p")
    upd = api.update(
        "ports",
        port["id"],
        name="p-renamed",
        device_id="vm-1",
        device_owner="compute:nova",
        allowed_address_pairs=[{"ip_address": "10.7.0.200"}],
    )
    assert upd["name"] == "p-renamed"
    assert upd["device_id"] == "vm-1" and upd["device_owner"] == "compute:nova"
    # Neutron fills in the port's own MAC (recorded 18).
    assert upd["allowed_address_pairs"] == [
        {"ip_address": "10.7.0.200", "mac_address": port["mac_address"]}
    ]
    assert upd["revision_number"] > port["revision_number"]
    assert upd["mac_address"] == port["mac_address"] and upd["fixed_ips"] == port["fixed_ips"]
    assert api.show("ports", port["id"]) == upd


def test_network_update_and_revision(api):
    net = api.network()
    upd = api.update("networks", net["id"], name="renamed", description="d", admin_state_up=False)
    assert (upd["name"], upd["description"], upd["admin_state_up"]) == ("renamed", "d", False)
    assert upd["revision_number"] > net["revision_number"]
    assert upd["created_at"] == net["created_at"]
    assert upd["updated_at"] >= net["updated_at"]
    upd2 = api.update("networks", net["id"], description="e")
    assert upd2["revision_number"] > upd["revision_number"]


def test_network_delete_deletes_its_subnets(api):
    net, sub = api.network_with_subnet("10.8.0.0/24")
    api.remove("networks", net["id"])
    expect_error(api.get(f"/v2.0/networks/{net['id']}"), 404, "NetworkNotFound")
    expect_error(api.get(f"/v2.0/subnets/{sub['id']}"), 404, "SubnetNotFound")


def test_subnet_delete(api):
    net, sub = api.network_with_subnet("10.9.0.0/24")
    api.remove("subnets", sub["id"])
    assert api.show("networks", net["id"])["subnets"] == []
    # The CIDR is free again on that network.
    api.subnet(net["id"], "10.9.0.0/24")


# ---------------------------------------------------------------------------
# Bulk create
# ---------------------------------------------------------------------------


def test_bulk_create_networks(api):
    names = [uniq("bulk"), uniq("bulk")]
    nets = api.create_bulk("networks", [{"name": n} for n in names])
    assert [n["name"] for n in nets] == names
    for n in nets:
        assert api.show("networks", n["id"])["name"] == n["name"]


def test_bulk_create_ports(api):
    net, sub = api.network_with_subnet("10.10.0.0/24")
    ports = api.create_bulk(
        "ports",
        [
            {"network_id": net["id"], "name": "a"},
            {"network_id": net["id"], "name": "b", "fixed_ips": [{"ip_address": "10.10.0.99"}]},
        ],
    )
    assert [p["name"] for p in ports] == ["a", "b"]
    assert ips_of(ports[1]) == ["10.10.0.99"]
    assert ips_of(ports[0]) != ips_of(ports[1])


# ---------------------------------------------------------------------------
# 400s
# ---------------------------------------------------------------------------


def test_malformed_json_400(api):
    resp = api.post("/v2.0/networks", raw='{"network": {')
    expect_error(resp, 400, "HTTPBadRequest")


def test_unknown_attribute_400(api):
    name = uniq("bogus")
    resp = api.post("/v2.0/networks", {"network": {"name": name, "bogus": 1}})
    expect_error(resp, 400, "HTTPBadRequest")
    assert api.list("networks", {"name": name}) == []


def test_missing_body_key_400(api):
    expect_error(api.post("/v2.0/networks", {"net": {"name": "x"}}), 400, "HTTPBadRequest")


def test_invalid_attribute_value_400(api):
    # neutron-lib's converters raise InvalidInput...
    resp = api.post("/v2.0/networks", {"network": {"admin_state_up": "notabool"}})
    expect_error(resp, 400, "InvalidInput")
    # ...its validators answer HTTPBadRequest ("Invalid input for name. Reason: ...").
    name = "x" * 300
    resp = api.post("/v2.0/networks", {"network": {"name": name}})
    expect_error(resp, 400, "HTTPBadRequest")
    assert api.list("networks", {"name": name}) == []


def test_update_read_only_attribute_400(api):
    net = api.network()
    resp = api.put(f"/v2.0/networks/{net['id']}", {"network": {"id": str(uuid.uuid4())}})
    expect_error(resp, 400, "HTTPBadRequest")
    assert api.show("networks", net["id"])["revision_number"] == net["revision_number"]


def test_update_unknown_attribute_400(api):
    net = api.network()
    resp = api.put(f"/v2.0/networks/{net['id']}", {"network": {"bogus": 1}})
    expect_error(resp, 400, "HTTPBadRequest")


@pytest.mark.parametrize(
    "cidr,error_type",
    [
        ("10.0.0.300/24", "InvalidInput"),  # recorded (29)
        ("not-a-cidr", {"InvalidInput", "HTTPBadRequest"}),
        ("10.0.0.0/33", {"InvalidInput", "HTTPBadRequest"}),
    ],
)
def test_subnet_bad_cidr_400(api, cidr, error_type):
    net = api.network()
    resp = api.post(
        "/v2.0/subnets", {"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": cidr}}
    )
    expect_error(resp, 400, error_type)
    assert api.show("networks", net["id"])["subnets"] == []


def test_subnet_ip_version_mismatch_400(api):
    net = api.network()
    resp = api.post(
        "/v2.0/subnets",
        {"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": "fd00:1::/64"}},
    )
    expect_error(resp, 400, {"InvalidInput", "HTTPBadRequest"})
    assert api.show("networks", net["id"])["subnets"] == []


def test_overlapping_subnets_on_one_network_400(api):
    net, sub = api.network_with_subnet("10.11.0.0/16")
    rev = api.show("networks", net["id"])["revision_number"]
    for cidr in ["10.11.5.0/24", "10.11.0.0/16", "10.0.0.0/8"]:
        resp = api.post(
            "/v2.0/subnets", {"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": cidr}}
        )
        expect_error(resp, 400, "InvalidInput")
    shown = api.show("networks", net["id"])
    assert shown["subnets"] == [sub["id"]]
    assert shown["revision_number"] == rev
    # Same CIDR on another network is fine.
    other = api.network()
    api.subnet(other["id"], "10.11.0.0/16")


def test_allocation_pool_outside_cidr_400(api):
    net = api.network()
    resp = api.post(
        "/v2.0/subnets",
        {
            "subnet": {
                "network_id": net["id"],
                "ip_version": 4,
                "cidr": "10.12.0.0/24",
                "allocation_pools": [{"start": "10.12.1.10", "end": "10.12.1.20"}],
            }
        },
    )
    expect_error(resp, 400, "OutOfBoundsAllocationPool")


def test_port_ip_outside_subnet_400(api):
    net, sub = api.network_with_subnet("10.13.0.0/24")
    resp = api.post(
        "/v2.0/ports",
        {"port": {"network_id": net["id"], "fixed_ips": [{"subnet_id": sub["id"], "ip_address": "10.99.0.5"}]}},
    )
    expect_error(resp, 400, "InvalidIpForSubnet")
    resp = api.post(
        "/v2.0/ports",
        {"port": {"network_id": net["id"], "fixed_ips": [{"ip_address": "10.99.0.5"}]}},
    )
    expect_error(resp, 400, "InvalidIpForNetwork")
    assert api.list("ports", {"network_id": net["id"]}) == []


def test_port_subnet_of_other_network_400(api):
    net, _ = api.network_with_subnet("10.14.0.0/24")
    _, other_sub = api.network_with_subnet("10.15.0.0/24")
    resp = api.post(
        "/v2.0/ports", {"port": {"network_id": net["id"], "fixed_ips": [{"subnet_id": other_sub["id"]}]}}
    )
    expect_error(resp, 400, "InvalidInput")


def _rule(sg_id, **attrs):
    body = {"security_group_id": sg_id, "direction": "ingress", "ethertype": "IPv4"}
    body.update(attrs)
    return {"security_group_rule": body}


def _rule_count(api, sg_id):
    return len(api.list("security-group-rules", {"security_group_id": sg_id}))


def test_sg_rule_remote_ip_and_remote_group_400(api):
    sg = api.security_group()
    resp = api.post(
        "/v2.0/security-group-rules",
        _rule(sg["id"], protocol="tcp", remote_ip_prefix="10.0.0.0/8", remote_group_id=sg["id"]),
    )
    # Neutron's error since address groups (a third kind of remote).
    expect_error(resp, 400, "SecurityGroupMultipleRemoteEntites")
    assert _rule_count(api, sg["id"]) == 2


def test_sg_rule_port_range_on_protocol_without_ports_400(api):
    sg = api.security_group()
    resp = api.post(
        "/v2.0/security-group-rules",
        _rule(sg["id"], protocol="gre", port_range_min=22, port_range_max=22),
    )
    expect_error(resp, 400, "SecurityGroupInvalidProtocolForPortRange")
    resp = api.post(
        "/v2.0/security-group-rules", _rule(sg["id"], port_range_min=22, port_range_max=22)
    )
    expect_error(resp, 400, "SecurityGroupProtocolRequiredWithPorts")
    assert _rule_count(api, sg["id"]) == 2


def test_sg_rule_bad_port_range_400(api):
    sg = api.security_group()
    resp = api.post(
        "/v2.0/security-group-rules",
        _rule(sg["id"], protocol="tcp", port_range_min=100, port_range_max=10),
    )
    expect_error(resp, 400, "SecurityGroupInvalidPortRange")


@pytest.mark.parametrize(
    "ethertype,prefix", [("IPv4", "::/0"), ("IPv6", "10.0.0.0/8"), ("IPv4", "fd00::/64")]
)
def test_sg_rule_ethertype_prefix_mismatch_400(api, ethertype, prefix):
    sg = api.security_group()
    resp = api.post(
        "/v2.0/security-group-rules",
        _rule(sg["id"], ethertype=ethertype, protocol="tcp", remote_ip_prefix=prefix),
    )
    expect_error(resp, 400, "SecurityGroupRuleParameterConflict")
    assert _rule_count(api, sg["id"]) == 2


def test_sg_rule_invalid_direction_and_protocol_400(api):
    sg = api.security_group()
    expect_error(api.post("/v2.0/security-group-rules", _rule(sg["id"], direction="sideways")), 400, None)
    expect_error(api.post("/v2.0/security-group-rules", _rule(sg["id"], protocol="bogus")), 400, None)
    assert _rule_count(api, sg["id"]) == 2


# ---------------------------------------------------------------------------
# 404s
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "collection,error_type",
    [
        ("networks", "NetworkNotFound"),
        ("subnets", "SubnetNotFound"),
        ("ports", "PortNotFound"),
        ("security-groups", "SecurityGroupNotFound"),
        ("security-group-rules", "SecurityGroupRuleNotFound"),
    ],
)
def test_unknown_id_404(api, collection, error_type):
    expect_error(api.get(f"/v2.0/{collection}/{MISSING}"), 404, error_type)
    expect_error(api.delete(f"/v2.0/{collection}/{MISSING}"), 404, error_type)
    # A name is not an id: clients look names up by GET first, and need a 404.
    expect_error(api.get(f"/v2.0/{collection}/not-a-uuid"), 404, error_type)


def test_unknown_id_update_404(api):
    resp = api.put(f"/v2.0/networks/{MISSING}", {"network": {"name": "x"}})
    expect_error(resp, 404, "NetworkNotFound")


def test_create_on_unknown_network_404(api):
    resp = api.post("/v2.0/ports", {"port": {"network_id": MISSING}})
    expect_error(resp, 404, "NetworkNotFound")
    resp = api.post("/v2.0/subnets", {"subnet": {"network_id": MISSING, "ip_version": 4, "cidr": "10.0.0.0/24"}})
    expect_error(resp, 404, "NetworkNotFound")


def test_port_with_unknown_security_group_404(api):
    net = api.network()
    resp = api.post("/v2.0/ports", {"port": {"network_id": net["id"], "security_groups": [MISSING]}})
    expect_error(resp, 404, "SecurityGroupNotFound")
    assert api.list("ports", {"network_id": net["id"]}) == []


def test_rule_for_unknown_security_group_404(api):
    resp = api.post("/v2.0/security-group-rules", _rule(MISSING, protocol="tcp"))
    expect_error(resp, 404, "SecurityGroupNotFound")


# ---------------------------------------------------------------------------
# 409s
# ---------------------------------------------------------------------------


def test_ip_already_allocated_409(api):
    net, sub = api.network_with_subnet("10.20.0.0/24")
    fixed = [{"subnet_id": sub["id"], "ip_address": "10.20.0.10"}]
    api.port(net["id"], fixed_ips=fixed)
    resp = api.post("/v2.0/ports", {"port": {"network_id": net["id"], "fixed_ips": fixed}})
    err = expect_error(resp, 409, "IpAddressAlreadyAllocated")
    assert "10.20.0.10" in err["message"]
    assert len(api.list("ports", {"network_id": net["id"]})) == 1


def test_port_update_to_ip_in_use_409_changes_nothing(api):
    net, sub = api.network_with_subnet("10.21.0.0/24")
    api.port(net["id"], fixed_ips=[{"subnet_id": sub["id"], "ip_address": "10.21.0.10"}])
    p2 = api.port(net["id"], fixed_ips=[{"subnet_id": sub["id"], "ip_address": "10.21.0.11"}])
    resp = api.put(
        f"/v2.0/ports/{p2['id']}",
        {"port": {"name": "x", "fixed_ips": [{"subnet_id": sub["id"], "ip_address": "10.21.0.10"}]}},
    )
    expect_error(resp, 409, "IpAddressAlreadyAllocated")
    assert api.show("ports", p2["id"]) == p2


def test_pool_exhausted_409(api):
    # /30: .0 network, .1 gateway, .3 broadcast -> one address
    net, sub = api.network_with_subnet("10.22.0.0/30")
    assert sub["allocation_pools"] == [{"start": "10.22.0.2", "end": "10.22.0.2"}]
    assert ips_of(api.port(net["id"])) == ["10.22.0.2"]
    resp = api.post("/v2.0/ports", {"port": {"network_id": net["id"]}})
    expect_error(resp, 409, "IpAddressGenerationFailure")
    assert len(api.list("ports", {"network_id": net["id"]})) == 1


def test_subnet_in_use_409(api):
    net, sub = api.network_with_subnet("10.23.0.0/24")
    port = api.port(net["id"])
    expect_error(api.delete(f"/v2.0/subnets/{sub['id']}"), 409, "SubnetInUse")
    assert api.show("subnets", sub["id"])["id"] == sub["id"]
    assert api.show("ports", port["id"])["fixed_ips"] == port["fixed_ips"]
    api.remove("ports", port["id"])
    api.remove("subnets", sub["id"])


def test_network_in_use_409(api):
    net, sub = api.network_with_subnet("10.24.0.0/24")
    port = api.port(net["id"])
    err = expect_error(api.delete(f"/v2.0/networks/{net['id']}"), 409, "NetworkInUse")
    assert port["id"] in err["message"]
    assert api.show("networks", net["id"])["subnets"] == [sub["id"]]
    assert api.show("subnets", sub["id"])["id"] == sub["id"]
    assert api.show("ports", port["id"])["fixed_ips"] == port["fixed_ips"]


def test_duplicate_rule_409(api):
    sg = api.security_group()
    rule = _rule(sg["id"], protocol="tcp", port_range_min=22, port_range_max=22, remote_ip_prefix="0.0.0.0/0")
    first = expect(api.post("/v2.0/security-group-rules", rule), 201)["security_group_rule"]
    err = expect_error(api.post("/v2.0/security-group-rules", rule), 409, "SecurityGroupRuleExists")
    assert first["id"] in err["message"]
    # A new group's own egress rules count as existing too.
    egress = {"security_group_rule": {"security_group_id": sg["id"], "direction": "egress", "ethertype": "IPv4"}}
    expect_error(api.post("/v2.0/security-group-rules", egress), 409, "SecurityGroupRuleExists")
    assert _rule_count(api, sg["id"]) == 3


def test_security_group_in_use_409(api):
    net = api.network()
    sg = api.security_group()
    port = api.port(net["id"], security_groups=[sg["id"]])
    expect_error(api.delete(f"/v2.0/security-groups/{sg['id']}"), 409, "SecurityGroupInUse")
    api.update("ports", port["id"], security_groups=[])
    api.remove("security-groups", sg["id"])


# ---------------------------------------------------------------------------
# Security groups
# ---------------------------------------------------------------------------


def test_new_security_group_has_two_egress_rules(api):
    sg = api.create("security-groups", name=uniq("sg"), description="sample group")
    assert sg["description"] == "sample group"
    rules = sg["security_group_rules"]
    assert sorted((r["direction"], r["ethertype"]) for r in rules) == [
        ("egress", "IPv4"),
        ("egress", "IPv6"),
    ]
    for r in rules:
        assert r["security_group_id"] == sg["id"]
        assert r["protocol"] is None and r["remote_ip_prefix"] is None and r["remote_group_id"] is None
        assert r["port_range_min"] is None and r["port_range_max"] is None


def test_default_security_group_per_project(tenant):
    t = tenant()
    groups = t.list("security-groups")
    assert [g["name"] for g in groups] == ["default"]
    sg = groups[0]
    assert sg["project_id"] == t.project
    assert sg["description"] == "Default security group"
    got = sorted(
        (r["direction"], r["ethertype"], r["remote_group_id"]) for r in sg["security_group_rules"]
    )
    assert got == [
        ("egress", "IPv4", None),
        ("egress", "IPv6", None),
        ("ingress", "IPv4", sg["id"]),
        ("ingress", "IPv6", sg["id"]),
    ]
    # Still exactly one after more requests.
    t.network()
    assert [g["id"] for g in t.list("security-groups")] == [sg["id"]]
    assert len(t.list("security-group-rules")) == 4


def test_default_group_created_by_first_request_of_any_kind(tenant):
    t = tenant()
    net = t.network()  # first request of this project is a create
    port = t.port(net["id"])
    groups = t.list("security-groups", {"name": "default"})
    assert len(groups) == 1
    assert port["security_groups"] == [groups[0]["id"]]


def test_rule_create_show_delete(api):
    sg = api.security_group()
    rule = expect(
        api.post(
            "/v2.0/security-group-rules",
            _rule(sg["id"], protocol="tcp", port_range_min=22, port_range_max=22, remote_ip_prefix="0.0.0.0/0"),
        ),
        201,
    )["security_group_rule"]
    assert (rule["direction"], rule["ethertype"], rule["protocol"]) == ("ingress", "IPv4", "tcp")
    assert (rule["port_range_min"], rule["port_range_max"]) == (22, 22)
    assert rule["remote_ip_prefix"] == "0.0.0.0/0"
    assert rule["security_group_id"] == sg["id"]
    assert rule["project_id"] == sg["project_id"]
    assert api.show("security-group-rules", rule["id"]) == rule
    shown = api.show("security-groups", sg["id"])
    assert rule["id"] in [r["id"] for r in shown["security_group_rules"]]
    assert shown["revision_number"] > sg["revision_number"]
    api.remove("security-group-rules", rule["id"])
    assert rule["id"] not in [r["id"] for r in api.show("security-groups", sg["id"])["security_group_rules"]]


def test_rule_with_remote_group_and_icmp(api):
    sg = api.security_group()
    r1 = expect(api.post("/v2.0/security-group-rules", _rule(sg["id"], remote_group_id=sg["id"])), 201)
    assert r1["security_group_rule"]["remote_group_id"] == sg["id"]
    r2 = expect(
        api.post("/v2.0/security-group-rules", _rule(sg["id"], protocol="icmp", port_range_min=8, port_range_max=0)),
        201,
    )["security_group_rule"]
    assert (r2["protocol"], r2["port_range_min"], r2["port_range_max"]) == ("icmp", 8, 0)


def test_security_group_delete_removes_its_rules(api):
    sg = api.security_group()
    rule_ids = [r["id"] for r in sg["security_group_rules"]]
    api.remove("security-groups", sg["id"])
    for rid in rule_ids:
        expect_error(api.get(f"/v2.0/security-group-rules/{rid}"), 404, "SecurityGroupRuleNotFound")


def test_security_group_update(api):
    sg = api.security_group()
    upd = api.update("security-groups", sg["id"], name="renamed", description="new")
    assert (upd["name"], upd["description"]) == ("renamed", "new")
    assert upd["revision_number"] > sg["revision_number"]


# ---------------------------------------------------------------------------
# fields, filters, sorting, pagination
# ---------------------------------------------------------------------------


def test_fields_on_list_and_show(api):
    net, _ = api.network_with_subnet("10.30.0.0/24")
    api.port(net["id"])
    resp = api.get(
        "/v2.0/ports",
        params=[("network_id", net["id"]), ("fields", "id"), ("fields", "fixed_ips"), ("fields", "security_groups")],
    )
    ports = expect(resp, 200)["ports"]
    assert len(ports) == 1
    assert set(ports[0]) == {"id", "fixed_ips", "security_groups"}
    shown = expect(api.get(f"/v2.0/networks/{net['id']}", params=[("fields", "name"), ("fields", "status")]), 200)
    assert shown["network"] == {"name": net["name"], "status": "ACTIVE"}


def test_filter_by_attribute_and_repeated_keys_are_or(tenant):
    t = tenant()
    a, b, c = t.network(name="alpha"), t.network(name="bravo"), t.network(name="charlie")
    by = lambda params: sorted(n["name"] for n in t.list_own("networks", params))  # noqa: E731
    assert by({"name": "alpha"}) == ["alpha"]
    assert by([("name", "alpha"), ("name", "charlie")]) == ["alpha", "charlie"]
    assert by([("id", a["id"]), ("id", b["id"])]) == ["alpha", "bravo"]
    assert by({"name": "nope"}) == []
    t.update("networks", c["id"], admin_state_up=False)
    assert by({"admin_state_up": "false"}) == ["charlie"]
    assert by({"admin_state_up": "true"}) == ["alpha", "bravo"]
    assert by([("name", "alpha"), ("admin_state_up", "false")]) == []


def test_filter_ports_by_device_and_fixed_ip(api):
    net, sub = api.network_with_subnet("10.31.0.0/24")
    vm_a, vm_b = uniq("vm"), uniq("vm")
    p1 = api.port(net["id"], device_id=vm_a, fixed_ips=[{"subnet_id": sub["id"], "ip_address": "10.31.0.5"}])
    api.port(net["id"], device_id=vm_b)
    assert [p["id"] for p in api.list("ports", {"device_id": vm_a})] == [p1["id"]]
    got = api.list("ports", {"network_id": net["id"], "fixed_ips": "ip_address=10.31.0.5"})
    assert [p["id"] for p in got] == [p1["id"]]


def test_filter_by_tags(tenant):
    t = tenant()
    a = t.network(name="a")
    b = t.network(name="b")
    t.network(name="c")
    expect(t.put(f"/v2.0/networks/{a['id']}/tags", {"tags": ["red", "blue"]}), 200)
    expect(t.put(f"/v2.0/networks/{b['id']}/tags", {"tags": ["red"]}), 200)
    by = lambda params: sorted(n["name"] for n in t.list_own("networks", params))  # noqa: E731
    assert by({"tags": "red"}) == ["a", "b"]
    assert by({"tags": "red,blue"}) == ["a"]
    assert by({"tags-any": "blue,green"}) == ["a"]
    assert by({"not-tags": "red"}) == ["c"]


def test_tags_subresource(api):
    net = api.network()
    base = f"/v2.0/networks/{net['id']}/tags"
    expect(api.put(f"{base}/red"), 201)
    expect(api.get(f"{base}/red"), 204)
    assert api.get(f"{base}/green").status_code == 404
    assert expect(api.get(base), 200)["tags"] == ["red"]
    body = expect(api.put(base, {"tags": ["a", "b"]}), 200)
    assert sorted(body["tags"]) == ["a", "b"]
    assert sorted(api.show("networks", net["id"])["tags"]) == ["a", "b"]
    expect(api.delete(f"{base}/a"), 204)
    assert api.show("networks", net["id"])["tags"] == ["b"]
    expect(api.delete(base), 204)
    assert api.show("networks", net["id"])["tags"] == []


def test_tags_on_create_and_other_resources(api):
    net = api.network(tags=["t1"])
    assert net["tags"] == ["t1"]
    sg = api.security_group()
    expect(api.put(f"/v2.0/security-groups/{sg['id']}/tags/x"), 201)
    assert api.show("security-groups", sg["id"])["tags"] == ["x"]
    port = api.port(net["id"])
    expect(api.put(f"/v2.0/ports/{port['id']}/tags", {"tags": ["y"]}), 200)
    assert api.show("ports", port["id"])["tags"] == ["y"]


def test_sort(tenant):
    t = tenant()
    for name in ["delta", "alpha", "charlie", "bravo"]:
        t.network(name=name)
    names = lambda params: [n["name"] for n in t.list_own("networks", params)]  # noqa: E731
    assert names({"sort_key": "name", "sort_dir": "asc"}) == ["alpha", "bravo", "charlie", "delta"]
    assert names({"sort_key": "name", "sort_dir": "desc"}) == ["delta", "charlie", "bravo", "alpha"]
    t.update("networks", t.list("networks", {"name": "charlie"})[0]["id"], admin_state_up=False)
    got = names([("sort_key", "admin_state_up"), ("sort_dir", "asc"), ("sort_key", "name"), ("sort_dir", "desc")])
    assert got == ["charlie", "delta", "bravo", "alpha"]


def _page_through(t, first_path, params, key="networks"):
    pages = []
    url, query = first_path, params
    for _ in range(20):
        body = expect(t.get(url, params=query), 200)
        pages.append(body)
        nxt = [link["href"] for link in body.get(f"{key}_links", []) if link["rel"] == "next"]
        if not nxt:
            break
        assert nxt[0].startswith(t.base + "/v2.0/"), nxt[0]
        url, query = nxt[0], None
    return pages


def test_pagination_with_links(tenant):
    t = tenant()
    for name in ["n1", "n2", "n3", "n4", "n5"]:
        t.network(name=name)
    pages = _page_through(
        t, "/v2.0/networks", {"limit": 2, "sort_key": "name", "sort_dir": "asc", "project_id": t.project}
    )
    got = [[n["name"] for n in p["networks"]] for p in pages]
    assert got[:3] == [["n1", "n2"], ["n3", "n4"], ["n5"]], got
    assert all(p["networks"] == [] for p in pages[3:])
    # A full page links to the next one with the last id as marker.
    first_next = [link["href"] for link in pages[0]["networks_links"] if link["rel"] == "next"][0]
    q = parse_qs(urlparse(first_next).query)
    assert q["marker"] == [pages[0]["networks"][-1]["id"]]
    assert q["limit"] == ["2"]
    # A short page is the last one: no next link.
    assert not [link for link in pages[2].get("networks_links", []) if link["rel"] == "next"]


def test_pagination_default_order_and_marker(tenant):
    t = tenant()
    ids = {t.network()["id"] for _ in range(5)}
    pages = _page_through(t, "/v2.0/networks", {"limit": 2, "project_id": t.project})
    seen = [n["id"] for p in pages for n in p["networks"]]
    assert len(seen) == len(set(seen)) == 5 and set(seen) == ids
    # A marker is an id: the page after it.
    ordered = [n["id"] for n in t.list_own("networks", {"sort_key": "name", "sort_dir": "asc"})]
    query = {"limit": 2, "marker": ordered[1], "sort_key": "name", "sort_dir": "asc", "project_id": t.project}
    body = expect(
        t.get("/v2.0/networks", params=query),
        200,
    )
    assert [n["id"] for n in body["networks"]] == ordered[2:4]


def test_pagination_of_ports(api):
    net, _ = api.network_with_subnet("10.32.0.0/24")
    ids = {api.port(net["id"])["id"] for _ in range(7)}
    pages = _page_through(api, "/v2.0/ports", {"network_id": net["id"], "limit": 3}, key="ports")
    seen = [p["id"] for page in pages for p in page["ports"]]
    assert sorted(seen) == sorted(ids)


# ---------------------------------------------------------------------------
# If-Match / revision_number
# ---------------------------------------------------------------------------


def test_if_match_put(api):
    net = api.network()
    rev = api.show("networks", net["id"])["revision_number"]
    resp = api.put(
        f"/v2.0/networks/{net['id']}",
        {"network": {"name": "ok"}},
        headers={"If-Match": f"revision_number={rev}"},
    )
    upd = expect(resp, 200)["network"]
    assert upd["name"] == "ok" and upd["revision_number"] > rev
    resp = api.put(
        f"/v2.0/networks/{net['id']}",
        {"network": {"name": "stale"}},
        headers={"If-Match": f"revision_number={rev}"},
    )
    expect_error(resp, 412, "RevisionNumberConstraintFailed")
    shown = api.show("networks", net["id"])
    assert shown["name"] == "ok" and shown["revision_number"] == upd["revision_number"]


def test_if_match_delete(api):
    net, _ = api.network_with_subnet("10.33.0.0/24")
    port = api.port(net["id"])
    stale = port["revision_number"] - 1 if port["revision_number"] > 0 else port["revision_number"] + 5
    resp = api.delete(f"/v2.0/ports/{port['id']}", headers={"If-Match": f"revision_number={stale}"})
    expect_error(resp, 412, "RevisionNumberConstraintFailed")
    assert api.show("ports", port["id"]) == port
    resp = api.delete(
        f"/v2.0/ports/{port['id']}", headers={"If-Match": f"revision_number={port['revision_number']}"}
    )
    expect(resp, 204)


def test_if_match_takes_any_integer(api):
    """Neutron reads N as an integer: a negative one is a mismatch, not a bad header."""
    net = api.network()
    resp = api.put(
        f"/v2.0/networks/{net['id']}",
        {"network": {"name": "x"}},
        headers={"If-Match": "revision_number=-1"},
    )
    expect_error(resp, 412, "RevisionNumberConstraintFailed")
    resp = api.put(
        f"/v2.0/networks/{net['id']}", {"network": {"name": "x"}}, headers={"If-Match": "rev=1"}
    )
    expect_error(resp, 400, "HTTPBadRequest")


def test_if_match_on_security_group_and_subnet(api):
    net, sub = api.network_with_subnet("10.34.0.0/24")
    resp = api.put(
        f"/v2.0/subnets/{sub['id']}",
        {"subnet": {"name": "x"}},
        headers={"If-Match": f"revision_number={sub['revision_number'] + 10}"},
    )
    expect_error(resp, 412, "RevisionNumberConstraintFailed")
    sg = api.security_group()
    resp = api.put(
        f"/v2.0/security-groups/{sg['id']}",
        {"security_group": {"name": "x"}},
        headers={"If-Match": f"revision_number={sg['revision_number'] + 10}"},
    )
    expect_error(resp, 412, "RevisionNumberConstraintFailed")


# ---------------------------------------------------------------------------
# Project scoping (vnet's noauth)
# ---------------------------------------------------------------------------


def test_other_projects_ids_are_404(tenant):
    a, b = tenant(), tenant()
    net, sub = a.network_with_subnet("10.40.0.0/24")
    port = a.port(net["id"])
    sg = a.security_group()
    rule_id = sg["security_group_rules"][0]["id"]
    for path, error_type in [
        (f"/v2.0/networks/{net['id']}", "NetworkNotFound"),
        (f"/v2.0/subnets/{sub['id']}", "SubnetNotFound"),
        (f"/v2.0/ports/{port['id']}", "PortNotFound"),
        (f"/v2.0/security-groups/{sg['id']}", "SecurityGroupNotFound"),
        (f"/v2.0/security-group-rules/{rule_id}", "SecurityGroupRuleNotFound"),
    ]:
        expect_error(b.get(path), 404, error_type)
        expect_error(b.delete(path), 404, error_type)
    expect_error(b.put(f"/v2.0/networks/{net['id']}", {"network": {"name": "x"}}), 404, "NetworkNotFound")
    expect_error(b.put(f"/v2.0/ports/{port['id']}", {"port": {"name": "x"}}), 404, "PortNotFound")
    # B can't build on A's network or group either.
    expect_error(b.post("/v2.0/ports", {"port": {"network_id": net["id"]}}), 404, "NetworkNotFound")
    resp = b.post("/v2.0/subnets", {"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": "10.41.0.0/24"}})
    expect_error(resp, 404, "NetworkNotFound")
    expect_error(b.post("/v2.0/security-group-rules", _rule(sg["id"], protocol="tcp")), 404, "SecurityGroupNotFound")
    # Nothing of A's changed.
    assert a.show("networks", net["id"])["name"] == net["name"]
    assert a.show("ports", port["id"]) == port
    assert a.show("networks", net["id"])["subnets"] == [sub["id"]]


def test_lists_are_isolated(tenant):
    a, b = tenant(), tenant()
    na = a.network_with_subnet("10.42.0.0/24")[0]
    nb = b.network_with_subnet("10.42.0.0/24")[0]  # same CIDR, other project: fine
    pa, pb = a.port(na["id"]), b.port(nb["id"])
    for t, net, port in [(a, na, pa), (b, nb, pb)]:
        listed = t.list("networks")
        assert [n["id"] for n in listed if n["project_id"] == t.project] == [net["id"]]
        assert all(n["project_id"] == t.project or n["shared"] or n["router:external"] for n in listed)
        assert [s["network_id"] for s in t.list_own("subnets")] == [net["id"]]
        assert [p["id"] for p in t.list("ports")] == [port["id"]]
        groups = t.list("security-groups")
        assert [g["project_id"] for g in groups] == [t.project]
        assert {r["project_id"] for r in t.list("security-group-rules")} == {t.project}
    # A filter naming the other project finds nothing.
    assert a.list("networks", {"project_id": b.project}) == []
    assert a.list("networks", {"id": nb["id"]}) == []


def test_overlapping_cidrs_in_different_networks(tenant):
    a = tenant()
    n1, s1 = a.network_with_subnet("192.168.0.0/24")
    n2, s2 = a.network_with_subnet("192.168.0.0/24")
    p1 = a.port(n1["id"], fixed_ips=[{"subnet_id": s1["id"], "ip_address": "192.168.0.10"}])
    p2 = a.port(n2["id"], fixed_ips=[{"subnet_id": s2["id"], "ip_address": "192.168.0.10"}])
    assert ips_of(p1) == ips_of(p2) == ["192.168.0.10"]


def test_member_cannot_share_a_network(tenant):
    a = tenant()
    name = uniq("net")
    resp = a.post("/v2.0/networks", {"network": {"name": name, "shared": True}})
    expect_error(resp, 403, "PolicyNotAuthorized")
    assert a.list("networks", {"name": name}) == []
    net = a.network()
    resp = a.put(f"/v2.0/networks/{net['id']}", {"network": {"shared": True}})
    expect_error(resp, 403, "PolicyNotAuthorized")
    assert a.show("networks", net["id"])["shared"] is False


def test_x_tenant_id_header(server):
    project = uniq("proj")
    t = server.api(project=project, roles="member", project_header="X-Tenant-Id")
    net = t.network()
    assert net["project_id"] == project
    other = server.api(project=uniq("proj"), roles="member")
    expect_error(other.get(f"/v2.0/networks/{net['id']}"), 404, "NetworkNotFound")


def test_shared_network_visible_to_all(api, tenant):
    shared = api.network(shared=True)
    sub = api.subnet(shared["id"], "10.43.0.0/24")
    private = api.network()
    b = tenant()
    assert b.show("networks", shared["id"])["shared"] is True
    listed = [n["id"] for n in b.list("networks")]
    assert shared["id"] in listed and private["id"] not in listed
    assert [n["id"] for n in b.list("networks", {"shared": "true", "id": shared["id"]})] == [shared["id"]]
    assert b.show("subnets", sub["id"])["network_id"] == shared["id"]
    # A project may plug into a shared network; the port is its own.
    port = b.port(shared["id"])
    assert port["project_id"] == b.project
    assert [p["id"] for p in b.list("ports")] == [port["id"]]
    # ...but may not change or delete the network.
    assert b.put(f"/v2.0/networks/{shared['id']}", {"network": {"name": "x"}}).status_code in (403, 404)
    assert b.delete(f"/v2.0/networks/{shared['id']}").status_code in (403, 404)
    assert api.show("networks", shared["id"])["name"] == shared["name"]


def test_non_admin_cannot_create_for_other_project(tenant):
    a = tenant()
    victim = uniq("proj")
    name = uniq("net")
    resp = a.post("/v2.0/networks", {"network": {"name": name, "project_id": victim}})
    expect_error(resp, 400, "HTTPBadRequest")
    assert a.list("networks", {"name": name}) == []
    # Naming itself is fine.
    assert a.network(project_id=a.project)["project_id"] == a.project


def test_admin_sees_all_and_creates_for_others(server, tenant):
    a = tenant()
    na = a.network()
    admin = server.api(project=uniq("adm"), roles="member,admin")
    assert admin.show("networks", na["id"])["project_id"] == a.project
    assert na["id"] in [n["id"] for n in admin.list("networks")]
    assert [n["id"] for n in admin.list("networks", {"project_id": a.project})] == [na["id"]]
    # Admin creates a network and a port for project C.
    c = uniq("proj")
    nc = admin.network(project_id=c)
    assert nc["project_id"] == nc["tenant_id"] == c
    admin.subnet(nc["id"], "10.44.0.0/24", project_id=c)
    pc = admin.port(nc["id"], project_id=c)
    assert pc["project_id"] == c
    tc = tenant(project=c)
    assert [n["id"] for n in tc.list_own("networks")] == [nc["id"]]
    # The port got C's default group, not the admin's.
    c_default = tc.list("security-groups", {"name": "default"})
    assert len(c_default) == 1 and pc["security_groups"] == [c_default[0]["id"]]
    # The admin may update and delete another project's resources.
    assert admin.update("networks", na["id"], name="by-admin")["name"] == "by-admin"


def test_bindings_are_admin_only(api, tenant):
    """Where a port is bound is the compute service's to say: tenants may
    neither set nor see binding:host_id and binding:profile."""
    t = tenant()
    net, _ = t.network_with_subnet("10.46.0.0/24")
    for attr, value in [("binding:host_id", "h1"), ("binding:profile", {"device": "x"})]:
        expect_error(t.post("/v2.0/ports", {"port": {"network_id": net["id"], attr: value}}), 403, "PolicyNotAuthorized")
    port = t.port(net["id"])
    expect_error(t.put(f"/v2.0/ports/{port['id']}", {"port": {"binding:host_id": "h1"}}), 403, "PolicyNotAuthorized")
    assert t.show("ports", port["id"]).get("binding:host_id") is None
    bound = api.update("ports", port["id"], **{"binding:host_id": "h1"})
    assert bound["binding:host_id"] == "h1"
    assert "binding:host_id" not in t.show("ports", port["id"])
    # The vnic type stays the tenant's to choose.
    assert t.update("ports", port["id"], **{"binding:vnic_type": "direct"})["binding:vnic_type"] == "direct"


def test_default_caller_is_admin(api, tenant):
    a = tenant()
    na = a.network()
    assert api.show("networks", na["id"])["project_id"] == a.project


def test_member_roles_are_not_admin(server, tenant):
    a = tenant()
    na = a.network()
    for roles in [None, "member", "reader,member"]:
        other = server.api(project=uniq("proj"), roles=roles)
        expect_error(other.get(f"/v2.0/networks/{na['id']}"), 404, "NetworkNotFound")


# ---------------------------------------------------------------------------
# A rejected request changes nothing
# ---------------------------------------------------------------------------


def test_rejected_bulk_network_create_creates_none(api):
    names = [uniq("bulk") for _ in range(3)]
    items = [{"name": names[0]}, {"name": names[1]}, {"name": names[2], "bogus": True}]
    expect_error(api.post("/v2.0/networks", {"networks": items}), 400, "HTTPBadRequest")
    assert api.list("networks", [("name", n) for n in names]) == []


def test_rejected_bulk_port_create_creates_none(api):
    net, sub = api.network_with_subnet("10.50.0.0/24")
    taken = api.port(net["id"], fixed_ips=[{"subnet_id": sub["id"], "ip_address": "10.50.0.9"}])
    items = [
        {"network_id": net["id"], "name": "b1", "fixed_ips": [{"subnet_id": sub["id"], "ip_address": "10.50.0.20"}]},
        {"network_id": net["id"], "name": "b2"},
        {"network_id": net["id"], "name": "b3", "fixed_ips": [{"subnet_id": sub["id"], "ip_address": "10.50.0.9"}]},
    ]
    expect_error(api.post("/v2.0/ports", {"ports": items}), 409, "IpAddressAlreadyAllocated")
    assert [p["id"] for p in api.list("ports", {"network_id": net["id"]})] == [taken["id"]]
    # The addresses the rejected batch would have taken are still free.
    again = api.port(net["id"], fixed_ips=[{"subnet_id": sub["id"], "ip_address": "10.50.0.20"}])
    assert ips_of(again) == ["10.50.0.20"]


def test_rejected_bulk_subnet_create_creates_none(api):
    net = api.network()
    items = [
        {"network_id": net["id"], "ip_version": 4, "cidr": "10.51.0.0/24"},
        {"network_id": net["id"], "ip_version": 4, "cidr": "10.51.0.0/25"},  # overlaps the first
    ]
    expect_error(api.post("/v2.0/subnets", {"subnets": items}), 400, "InvalidInput")
    assert api.show("networks", net["id"])["subnets"] == []
    assert api.list("subnets", {"network_id": net["id"]}) == []


def test_rejected_port_create_consumes_nothing(api):
    net, sub = api.network_with_subnet("10.52.0.0/30")  # a single address: .2
    resp = api.post(
        "/v2.0/ports", {"port": {"network_id": net["id"], "security_groups": [MISSING]}}
    )
    expect_error(resp, 404, "SecurityGroupNotFound")
    resp = api.post("/v2.0/ports", {"port": {"network_id": net["id"], "bogus": 1}})
    expect_error(resp, 400, "HTTPBadRequest")
    assert ips_of(api.port(net["id"])) == ["10.52.0.2"]


# ---------------------------------------------------------------------------
# Every advertised extension works (each test runs only if vnet lists it)
# ---------------------------------------------------------------------------


def _require_extension(api, alias):
    aliases = {e["alias"] for e in expect(api.get("/v2.0/extensions"), 200)["extensions"]}
    if alias not in aliases:
        pytest.skip(f"vnet does not advertise {alias}")


def test_ext_filter_validation(api):
    _require_extension(api, "filter-validation")
    expect_error(api.get("/v2.0/networks", params={"bogus": "1"}), 400, "HTTPBadRequest")
    # Paging, sorting and fields parameters are not filters.
    expect(api.get("/v2.0/networks", params={"fields": "id", "limit": 1, "sort_key": "name"}), 200)


def test_ext_ip_substring_filtering(api):
    _require_extension(api, "ip-substring-filtering")
    net, sub = api.network_with_subnet("10.60.0.0/24")
    p1 = api.port(net["id"], fixed_ips=[{"subnet_id": sub["id"], "ip_address": "10.60.0.123"}])
    api.port(net["id"], fixed_ips=[{"subnet_id": sub["id"], "ip_address": "10.60.0.45"}])
    got = api.list("ports", {"network_id": net["id"], "fixed_ips": "ip_address_substr=0.12"})
    assert [p["id"] for p in got] == [p1["id"]]


def test_ext_empty_string_filtering(tenant):
    t = tenant()
    _require_extension(t, "empty-string-filtering")
    unnamed = t.create("networks")
    t.network(name="named")
    assert [n["id"] for n in t.list_own("networks", {"name": ""})] == [unnamed["id"]]


def test_ext_net_mtu_writable(api):
    _require_extension(api, "net-mtu-writable")
    net = api.network()
    assert api.update("networks", net["id"], mtu=1400)["mtu"] == 1400
    resp = api.post("/v2.0/networks", {"network": {"name": uniq("net"), "mtu": 9000}})
    expect_error(resp, 400, {"InvalidInput", "HTTPBadRequest"})


def test_ipv6_needs_an_mtu_of_1280(api):
    net = api.network(mtu=1279)
    resp = api.post(
        "/v2.0/subnets", {"subnet": {"network_id": net["id"], "ip_version": 6, "cidr": "fd00:1::/64"}}
    )
    expect_error(resp, 400, "InvalidInput")
    api.update("networks", net["id"], mtu=1280)
    api.subnet(net["id"], "fd00:1::/64")
    resp = api.put(f"/v2.0/networks/{net['id']}", {"network": {"mtu": 1279}})
    expect_error(resp, 400, "InvalidInput")
    assert api.show("networks", net["id"])["mtu"] == 1280
    # IPv4 alone goes down to 68.
    v4, _ = api.network_with_subnet("10.62.0.0/24")
    assert api.update("networks", v4["id"], mtu=68)["mtu"] == 68


def test_subnets_filter_by_their_networks_sharing(api, tenant):
    shared = api.network(shared=True)
    s1 = api.subnet(shared["id"], "10.63.0.0/24")
    private, s2 = api.network_with_subnet("10.64.0.0/24")
    on_shared = {s["id"] for s in api.list("subnets", {"shared": "true"})}
    not_shared = {s["id"] for s in api.list("subnets", {"shared": "false"})}
    assert s1["id"] in on_shared and s1["id"] not in not_shared
    assert s2["id"] in not_shared and s2["id"] not in on_shared
    assert "shared" not in s1  # a filter, not an attribute, as in Neutron


def test_a_null_mac_regenerates_it_unless_bound(api):
    net, sub = api.network_with_subnet("10.65.0.0/24")
    api.subnet(net["id"], "fd00:65::/64", ipv6_address_mode="slaac", ipv6_ra_mode="slaac")
    port = api.port(net["id"])
    renewed = api.update("ports", port["id"], mac_address=None)
    assert renewed["mac_address"] != port["mac_address"]
    # The automatic (EUI-64) address follows the new MAC; the IPv4 one stays.
    v6 = [ip["ip_address"] for ip in renewed["fixed_ips"] if ":" in ip["ip_address"]]
    assert v6 == [eui64("fd00:65::/64", renewed["mac_address"])]
    assert [i for i in renewed["fixed_ips"] if i["subnet_id"] == sub["id"]] == [
        i for i in port["fixed_ips"] if i["subnet_id"] == sub["id"]
    ]
    bound = api.port(net["id"], **{"binding:host_id": "h1"})
    resp = api.put(f"/v2.0/ports/{bound['id']}", {"port": {"mac_address": None}})
    expect_error(resp, 409, "PortBound")
    assert api.show("ports", bound["id"])["mac_address"] == bound["mac_address"]


def test_ports_take_tags_in_bulk(api):
    net, _ = api.network_with_subnet("10.66.0.0/24")
    made = api.create_bulk("ports", [{"network_id": net["id"], "tags": ["a", "b"]}, {"network_id": net["id"]}])
    assert [sorted(p["tags"]) for p in made] == [["a", "b"], []]
    assert [p["id"] for p in api.list("ports", {"tags": "a"})] == [made[0]["id"]]


def test_ext_extra_dhcp_opt(api):
    _require_extension(api, "extra_dhcp_opt")
    net, _ = api.network_with_subnet("10.61.0.0/24")
    assert api.port(net["id"])["extra_dhcp_opts"] == []
    port = api.port(net["id"], extra_dhcp_opts=[{"opt_name": "bootfile-name", "opt_value": "pxelinux.0"}])
    opts = port["extra_dhcp_opts"]
    assert [(o["opt_name"], o["opt_value"]) for o in opts] == [("bootfile-name", "pxelinux.0")]


def test_ext_normalized_cidr(api):
    _require_extension(api, "security-groups-normalized-cidr")
    sg = api.security_group()
    rule = expect(
        api.post("/v2.0/security-group-rules", _rule(sg["id"], protocol="tcp", remote_ip_prefix="10.1.2.3/8")),
        201,
    )["security_group_rule"]
    assert rule["normalized_cidr"] == "10.0.0.0/8"


def test_ext_stateful_security_group(api):
    _require_extension(api, "stateful-security-group")
    assert api.security_group()["stateful"] is True
    sg = api.security_group(stateful=False)
    assert sg["stateful"] is False and api.show("security-groups", sg["id"])["stateful"] is False


def test_ext_rules_belong_to_default_sg(tenant):
    t = tenant()
    _require_extension(t, "security-groups-rules-belongs-to-default-sg")
    default = t.list("security-groups", {"name": "default"})[0]
    assert all(r["belongs_to_default_sg"] is True for r in default["security_group_rules"])
    other = t.security_group()
    assert all(r["belongs_to_default_sg"] is False for r in other["security_group_rules"])
