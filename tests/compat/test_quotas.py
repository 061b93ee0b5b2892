"""Quotas (per project, enforced with 409 OverQuota) and network IP
availability, over raw HTTP and openstacksdk; shapes as shared/neutron/28.
"""

from __future__ import annotations

import pytest

from helpers import expect, expect_error, uniq

QUOTA_NAMES = {
    "network", "subnet", "port", "router", "floatingip", "security_group", "security_group_rule",
    "subnetpool", "rbac_policy",
}


def test_defaults_are_generous_and_details_count_use(api, tenant):
    t = tenant()
    quota = expect(api.get(f"/v2.0/quotas/{t.project}"), 200)["quota"]
    assert set(quota) == QUOTA_NAMES
    assert quota["router"] >= 100 and quota["floatingip"] >= 500
    assert quota["security_group"] >= 150 and quota["security_group_rule"] >= 1000
    assert quota["subnetpool"] == -1  # Neutron's default: unlimited
    assert expect(api.get(f"/v2.0/quotas/{t.project}/default"), 200)["quota"] == quota
    net, _ = t.network_with_subnet("10.9.0.0/24")
    t.port(net["id"])
    details = expect(t.get(f"/v2.0/quotas/{t.project}/details"), 200)["quota"]
    assert details["network"] == {"limit": quota["network"], "used": 1, "reserved": 0}
    assert details["port"]["used"] == 1 and details["subnet"]["used"] == 1
    # The default group and its four rules count too, as in Neutron.
    assert details["security_group"]["used"] == 1 and details["security_group_rule"]["used"] == 4


def test_limits_are_enforced_per_project_and_change_nothing(api, tenant):
    t, other = tenant(), tenant()
    body = {"quota": {"network": 2, "port": "3"}}
    updated = expect(api.put(f"/v2.0/quotas/{t.project}", body), 200)["quota"]
    assert updated["network"] == 2 and updated["port"] == 3
    a = t.network()
    t.network()
    expect_error(t.post("/v2.0/networks", {"network": {"name": "third"}}), 409, "OverQuota")
    assert len(t.list_own("networks")) == 2
    other.network(), other.network(), other.network()  # another project is not limited
    # A bulk create that would cross the limit creates nothing.
    t.subnet(a["id"], "10.8.0.0/24")
    ports = [{"network_id": a["id"]} for _ in range(4)]
    expect_error(t.post("/v2.0/ports", {"ports": ports}), 409, "OverQuota")
    assert t.list_own("ports") == []
    # -1 is unlimited; DELETE returns to the defaults.
    expect(api.put(f"/v2.0/quotas/{t.project}", {"quota": {"network": -1}}), 200)
    t.network()
    listed = expect(api.get("/v2.0/quotas"), 200)["quotas"]
    assert any(q["project_id"] == t.project and q["network"] == -1 for q in listed)
    expect(api.delete(f"/v2.0/quotas/{t.project}"), 204)
    assert expect(api.get(f"/v2.0/quotas/{t.project}"), 200)["quota"]["port"] >= 500


def test_check_limit_refuses_a_limit_below_use_and_force_does_not(api, tenant, sdk):
    """The quota-check-limit extension, as openstacksdk and the CLI send it."""
    t = tenant()
    t.network(), t.network()
    resp = api.put(f"/v2.0/quotas/{t.project}", {"quota": {"network": 1, "check_limit": True}})
    err = expect_error(resp, 400, "HTTPBadRequest")
    assert "must be greater than or equal to already used 2" in err["message"]
    assert expect(api.get(f"/v2.0/quotas/{t.project}"), 200)["quota"]["network"] != 1
    # `openstack quota set --force` sends force; it sets the limit unchecked.
    forced = {"quota": {"network": 1, "force": True}}
    assert expect(api.put(f"/v2.0/quotas/{t.project}", forced), 200)["quota"]["network"] == 1
    conn = sdk()
    with pytest.raises(Exception, match="already used 2"):
        conn.network.update_quota(t.project, networks=0, check_limit=True)
    assert conn.network.get_quota(t.project).networks == 1


def test_quota_errors(api, tenant):
    t = tenant()
    expect_error(t.put(f"/v2.0/quotas/{t.project}", {"quota": {"network": 5}}), 403, "PolicyNotAuthorized")
    expect_error(t.get(f"/v2.0/quotas/{uniq('someone')}"), 403, "PolicyNotAuthorized")
    expect_error(t.get("/v2.0/quotas"), 403, "PolicyNotAuthorized")
    expect_error(api.put(f"/v2.0/quotas/{t.project}", {"quota": {"bogus": 5}}), 400, "InvalidInput")
    expect_error(api.put(f"/v2.0/quotas/{t.project}", {"quota": {"network": -2}}), 400, "InvalidInput")
    expect_error(api.put(f"/v2.0/quotas/{t.project}", {"quota": {"network": "many"}}), 400, "InvalidInput")
    assert expect(t.get("/v2.0/quotas/tenant"), 200)["tenant"]["tenant_id"] == t.project


def test_sdk_quotas(sdk, tenant):
    t = tenant()
    conn = sdk()
    conn.network.update_quota(t.project, networks=7)
    assert conn.network.get_quota(t.project).networks == 7
    details = conn.network.get_quota(t.project, details=True)
    assert details.networks["limit"] == 7 and details.networks["used"] == 0
    assert conn.network.get_quota_default(t.project).ports >= 500
    conn.network.delete_quota(t.project)
    assert conn.network.get_quota(t.project).networks == 100


def test_network_ip_availability(api, tenant):
    t = tenant()
    net, sub = t.network_with_subnet("10.7.0.0/28")  # pool .2-.14: 13 addresses
    t.port(net["id"]), t.port(net["id"])
    shown = expect(api.get(f"/v2.0/network-ip-availabilities/{net['id']}"), 200)["network_ip_availability"]
    assert shown["network_id"] == net["id"] and shown["project_id"] == t.project
    assert shown["total_ips"] == 13 and shown["used_ips"] == 2
    (s,) = shown["subnet_ip_availability"]
    assert s == {"subnet_id": sub["id"], "subnet_name": sub["name"], "cidr": "10.7.0.0/28",
                 "ip_version": 4, "total_ips": 13, "used_ips": 2}
    listed = expect(api.get("/v2.0/network-ip-availabilities", params={"project_id": t.project}), 200)
    assert [n["network_id"] for n in listed["network_ip_availabilities"]] == [net["id"]]
    expect_error(t.get("/v2.0/network-ip-availabilities"), 403, "PolicyNotAuthorized")
    expect_error(api.get("/v2.0/network-ip-availabilities/nope"), 404, "NetworkNotFound")


@pytest.mark.parametrize("kind", ["routers", "floatingips"])
def test_l3_quotas(api, tenant, kind):
    t = tenant()
    ext = api.network(**{"router:external": True})
    api.subnet(ext["id"], "198.51.100.0/24")
    expect(api.put(f"/v2.0/quotas/{t.project}", {"quota": {"router": 1, "floatingip": 1}}), 200)
    make = {
        "routers": lambda: t.post("/v2.0/routers", {"router": {"name": uniq("r")}}),
        "floatingips": lambda: t.post("/v2.0/floatingips", {"floatingip": {"floating_network_id": ext["id"]}}),
    }[kind]
    expect(make(), 201)
    expect_error(make(), 409, "OverQuota")


def test_cli_ip_availability(cli, api):
    net, sub = api.network_with_subnet("10.6.0.0/29")  # pool .2-.6
    api.port(net["id"])
    shown = cli.json("ip availability", "show", net["id"])
    assert shown["total_ips"] == 5 and shown["used_ips"] == 1
    assert shown["subnet_ip_availability"][0]["subnet_id"] == sub["id"]
    listed = cli.json("ip availability", "list")
    assert any(r["Network ID"] == net["id"] and r["Used IPs"] == 1 for r in listed)
