"""Address groups (`address-group`, `security-groups-remote-address-group`)
with the `openstack` CLI and raw HTTP.

Neutron's behaviour, from neutron/db/address_group_db.py and
neutron_lib/api/definitions/address_group.py: addresses are CIDRs stored as
`network/prefixlen` (host bits cleared), changed only by the actions
`add_addresses` (`AddressesAlreadyExist`, 400) and `remove_addresses`
(`AddressesNotFound`, 404), all or nothing; a group has standard attributes
but no tags; a group a rule names is not deleted (`AddressGroupInUse`, 409);
a rule has at most one remote (`SecurityGroupMultipleRemoteEntites`).
"""

from __future__ import annotations

from helpers import TIMESTAMP_RE, expect, expect_error, uniq


def _group(api, addresses=None, **attrs):
    attrs.setdefault("name", uniq("ag"))
    if addresses is not None:
        attrs["addresses"] = addresses
    return expect(api.post("/v2.0/address-groups", {"address_group": attrs}), 201)[
        "address_group"
    ]


def _rule(sg_id, **attrs):
    body = {"security_group_id": sg_id, "direction": "ingress", "ethertype": "IPv4"}
    body.update(attrs)
    return {"security_group_rule": body}


def test_cli_create_set_unset_rule_and_delete_in_use(cli, api):
    name, sg_name = uniq("AG"), uniq("SG")
    ag = cli.json(
        "address", "group", "create", "--address", "10.0.0.1", "--address", "10.1.0.0/24", name
    )
    assert sorted(ag["addresses"]) == ["10.0.0.1/32", "10.1.0.0/24"]
    shown = api.show("address-groups", ag["id"])
    assert set(shown) == {
        "id", "name", "description", "project_id", "tenant_id", "addresses",
        "created_at", "updated_at", "revision_number",
    }, "standard attributes, no tags"
    assert shown["revision_number"] == 0
    assert shown["created_at"] and __import__("re").match(TIMESTAMP_RE, shown["created_at"])

    cli.ok("address", "group", "set", "--address", "fd00::5", "--description", "d", name)
    shown = api.show("address-groups", ag["id"])
    assert sorted(shown["addresses"]) == ["10.0.0.1/32", "10.1.0.0/24", "fd00::5/128"]
    assert shown["description"] == "d"
    assert shown["revision_number"] == 2
    cli.ok("address", "group", "unset", "--address", "10.0.0.1", name)
    listed = cli.json("address", "group", "list")
    mine = [g for g in listed if g["ID"] == ag["id"]]
    assert len(mine) == 1 and sorted(mine[0]["Addresses"]) == ["10.1.0.0/24", "fd00::5/128"]
    # Adding an address it has: the CLI reports Neutron's error.
    res = cli.fails("address", "group", "set", "--address", "10.1.0.0/24", name)
    assert "already exist" in res.stderr

    cli.ok("security", "group", "create", sg_name)
    rule = cli.json(
        "security", "group", "rule", "create", "--ingress", "--protocol", "tcp",
        "--dst-port", "22", "--remote-address-group", name, sg_name,
    )
    assert rule["remote_address_group_id"] == ag["id"]
    assert rule["remote_ip_prefix"] is None and rule["remote_group_id"] is None
    listed = api.list("security-group-rules", {"remote_address_group_id": ag["id"]})
    assert [r["id"] for r in listed] == [rule["id"]]
    # The same rule again is a duplicate.
    dup = api.post(
        "/v2.0/security-group-rules",
        _rule(rule["security_group_id"], protocol="tcp", port_range_min=22, port_range_max=22,
              remote_address_group_id=ag["id"]),
    )
    expect_error(dup, 409, "SecurityGroupRuleExists")

    res = cli.fails("address", "group", "delete", name)
    assert "in use" in res.stderr
    resp = api.delete(f"/v2.0/address-groups/{ag['id']}")
    expect_error(resp, 409, "AddressGroupInUse")
    assert resp.json()["NeutronError"]["message"] == (
        f"Address group {ag['id']} is in use on one or more security group rules."
    )
    cli.ok("security", "group", "rule", "delete", rule["id"])
    cli.ok("address", "group", "delete", name)
    expect_error(api.get(f"/v2.0/address-groups/{ag['id']}"), 404, "AddressGroupNotFound")
    cli.ok("security", "group", "delete", sg_name)


def test_addresses_are_normalised_and_checked_as_neutron_does(api):
    ag = _group(api, ["10.1.0.5/24", "fd00::1/64"])
    assert sorted(ag["addresses"]) == ["10.1.0.0/24", "fd00::/64"]
    # An empty group, and null as none.
    assert _group(api)["addresses"] == []
    assert _group(api, None)["addresses"] == []
    assert expect(
        api.post("/v2.0/address-groups", {"address_group": {"addresses": None}}), 201
    )["address_group"]["addresses"] == []
    for bad in (["10.0.0.1"], ["10.0.0.0/33"], ["nonsense"], [5], "10.0.0.0/8",
                ["10.0.0.0/8", "10.0.0.0/8"]):
        resp = api.post("/v2.0/address-groups", {"address_group": {"addresses": bad}})
        expect_error(resp, 400, "HTTPBadRequest")
    # Addresses are not updatable by PUT; tags are not an attribute.
    resp = api.put(f"/v2.0/address-groups/{ag['id']}",
                   {"address_group": {"addresses": ["10.0.0.0/8"]}})
    expect_error(resp, 400, "HTTPBadRequest")
    resp = api.post("/v2.0/address-groups", {"address_group": {"tags": ["x"]}})
    expect_error(resp, 400, "HTTPBadRequest")
    updated = api.update("address-groups", ag["id"], name="renamed", description="why")
    assert (updated["name"], updated["description"], updated["revision_number"]) == (
        "renamed", "why", 1)


def test_actions_answer_the_group_and_refuse_all_or_nothing(api):
    ag = _group(api, ["10.0.0.0/24"])
    url = f"/v2.0/address-groups/{ag['id']}"
    body = expect(api.put(f"{url}/add_addresses", {"addresses": ["10.2.0.1", "10.3.0.9/16"]}), 200)
    assert sorted(body["address_group"]["addresses"]) == [
        "10.0.0.0/24", "10.2.0.1/32", "10.3.0.0/16"]

    resp = api.put(f"{url}/add_addresses", {"addresses": ["192.0.2.0/24", "10.0.0.7/24"]})
    expect_error(resp, 400, "AddressesAlreadyExist")
    assert resp.json()["NeutronError"]["message"] == (
        f"Addresses ['10.0.0.0/24'] already exist in the address group {ag['id']}."
    )
    resp = api.put(f"{url}/remove_addresses", {"addresses": ["10.0.0.0/24", "198.51.100.0/24"]})
    expect_error(resp, 404, "AddressesNotFound")
    assert "['198.51.100.0/24'] not found in the address group" in resp.json()["NeutronError"]["message"]
    assert sorted(api.show("address-groups", ag["id"])["addresses"]) == [
        "10.0.0.0/24", "10.2.0.1/32", "10.3.0.0/16"], "a refused action changes nothing"

    body = expect(api.put(f"{url}/remove_addresses", {"addresses": ["10.2.0.1/32"]}), 200)
    assert sorted(body["address_group"]["addresses"]) == ["10.0.0.0/24", "10.3.0.0/16"]
    for bad in ({"addresses": ["nonsense"]}, {"prefixes": ["10.0.0.0/8"]}, {"addresses": "10.0.0.0/8"}):
        expect_error(api.put(f"{url}/add_addresses", bad), 400, "HTTPBadRequest")
    expect_error(api.get(f"{url}/add_addresses"), 404, None)


def test_rules_name_one_remote_and_only_visible_groups(api, tenant):
    a, b = tenant(), tenant()
    ag = _group(a, ["10.0.0.0/8"])
    sg = expect(a.post("/v2.0/security-groups", {"security_group": {"name": uniq("sg")}}), 201)[
        "security_group"]
    for extra in ({"remote_ip_prefix": "10.0.0.0/8"}, {"remote_group_id": sg["id"]}):
        resp = a.post("/v2.0/security-group-rules",
                      _rule(sg["id"], remote_address_group_id=ag["id"], **extra))
        expect_error(resp, 400, "SecurityGroupMultipleRemoteEntites")
        assert resp.json()["NeutronError"]["message"] == (
            "Only one of remote_ip_prefix or remote_group_id or remote_address_group_id "
            "may be provided.")
    resp = a.post("/v2.0/security-group-rules", _rule(sg["id"], remote_address_group_id="nope"))
    expect_error(resp, 404, "AddressGroupNotFound")

    # Another tenant neither sees nor uses it.
    expect_error(b.get(f"/v2.0/address-groups/{ag['id']}"), 404, "AddressGroupNotFound")
    assert ag["id"] not in [g["id"] for g in b.list("address-groups")]
    expect_error(b.put(f"/v2.0/address-groups/{ag['id']}/add_addresses",
                       {"addresses": ["192.0.2.0/24"]}), 404, "AddressGroupNotFound")
    expect_error(b.delete(f"/v2.0/address-groups/{ag['id']}"), 404, "AddressGroupNotFound")
    b_sg = expect(b.post("/v2.0/security-groups", {"security_group": {"name": uniq("sg")}}), 201)[
        "security_group"]
    resp = b.post("/v2.0/security-group-rules",
                  _rule(b_sg["id"], remote_address_group_id=ag["id"]))
    expect_error(resp, 404, "AddressGroupNotFound")
    # The admin sees everyone's.
    assert ag["id"] in [g["id"] for g in api.list("address-groups")]

    rule = expect(a.post("/v2.0/security-group-rules",
                         _rule(sg["id"], protocol="tcp", remote_address_group_id=ag["id"])), 201)[
        "security_group_rule"]
    assert rule["remote_address_group_id"] == ag["id"]
    assert rule["normalized_cidr"] is None
    shown = a.show("security-groups", sg["id"])
    assert [r["remote_address_group_id"] for r in shown["security_group_rules"]
            if r["id"] == rule["id"]] == [ag["id"]]
    resp = a.put(f"/v2.0/security-group-rules/{rule['id']}",
                 {"security_group_rule": {"remote_address_group_id": None}})
    expect_error(resp, 400, "HTTPBadRequest")


def test_address_groups_are_listed_with_filters_and_fields(api):
    name = uniq("flt")
    ag = _group(api, ["203.0.113.0/24"], name=name)
    listed = api.list("address-groups", {"name": name, "fields": ["id", "addresses"]})
    assert listed == [{"id": ag["id"], "addresses": ["203.0.113.0/24"]}]
