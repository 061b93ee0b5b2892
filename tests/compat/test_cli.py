"""The `openstack` CLI (python-openstackclient) against vnet.

Invoked as `openstack --os-auth-type none --os-endpoint http://127.0.0.1:PORT ...`,
as in shared/neutron/openstack-cli-transcript.txt. Without X-Project-Id the CLI
acts as admin of vnet's default project. Results are cross-checked over raw
HTTP so that a CLI that merely exits 0 does not pass.
"""

from __future__ import annotations

from helpers import eui64, expect_error, ips_of, uniq


def _row(rows, rid):
    found = [r for r in rows if r.get("ID") == rid]
    assert len(found) == 1, f"{rid} listed {len(found)} times in {rows}"
    return found[0]


def test_network_create_list_show_set_delete(cli, api):
    name = uniq("cli-net")
    red, blue = uniq("red"), uniq("blue")  # the admin CLI sees every project's tags
    net = cli.json("network", "create", "--description", "first", "--tag", red, name)
    assert net["name"] == name
    assert net["description"] == "first"
    shown = api.show("networks", net["id"])
    assert shown["name"] == name and shown["description"] == "first"
    assert shown["tags"] == [red]
    assert shown["provider:network_type"] == "vxlan" and shown["mtu"] == 1450

    assert _row(cli.json("network", "list"), net["id"])["Name"] == name
    assert cli.json("network", "show", name)["id"] == net["id"]  # lookup by name
    assert cli.json("network", "show", net["id"])["name"] == name  # and by id

    new_name = uniq("cli-net")
    cli.ok(
        "network", "set", "--name", new_name, "--description", "second",
        "--tag", blue, "--disable", name,
    )
    shown = api.show("networks", net["id"])
    assert (shown["name"], shown["description"]) == (new_name, "second")
    assert shown["admin_state_up"] is False
    assert sorted(shown["tags"]) == sorted([blue, red])
    assert [r["ID"] for r in cli.json("network", "list", "--tags", f"{blue},{red}")] == [net["id"]]
    assert [r["ID"] for r in cli.json("network", "list", "--any-tags", red)] == [net["id"]]

    cli.ok("network", "unset", "--tag", red, new_name)
    assert api.show("networks", net["id"])["tags"] == [blue]

    cli.ok("network", "delete", new_name)
    expect_error(api.get(f"/v2.0/networks/{net['id']}"), 404, "NetworkNotFound")
    assert net["id"] not in [r["ID"] for r in cli.json("network", "list")]


def test_network_show_via_environment_variables(cli, api):
    net = api.network()
    res = cli.ok("network", "show", net["name"], "-f", "value", "-c", "name", use_env_vars=True)
    assert res.stdout.strip() == net["name"]


def test_shared_network_create(cli, api):
    name = uniq("cli-shared")
    net = cli.json("network", "create", "--share", name)
    assert api.show("networks", net["id"])["shared"] is True


def test_subnet_create_list_show_set_delete(cli, api):
    net = api.network()
    name = uniq("cli-sub")
    sub = cli.json(
        "subnet", "create", "--network", net["name"], "--subnet-range", "10.77.0.0/24",
        "--dns-nameserver", "10.77.0.53", name,
    )
    assert sub["name"] == name
    shown = api.show("subnets", sub["id"])
    assert shown["network_id"] == net["id"]
    assert shown["cidr"] == "10.77.0.0/24" and shown["gateway_ip"] == "10.77.0.1"
    assert shown["allocation_pools"] == [{"start": "10.77.0.2", "end": "10.77.0.254"}]
    assert shown["dns_nameservers"] == ["10.77.0.53"]
    assert api.show("networks", net["id"])["subnets"] == [sub["id"]]

    rows = cli.json("subnet", "list", "--network", net["name"])
    assert [r["ID"] for r in rows] == [sub["id"]]
    assert rows[0]["Subnet"] == "10.77.0.0/24"
    assert cli.json("subnet", "show", name)["cidr"] == "10.77.0.0/24"

    new_name = uniq("cli-sub")
    cli.ok("subnet", "set", "--name", new_name, "--description", "d", "--tag", "t1", name)
    shown = api.show("subnets", sub["id"])
    assert (shown["name"], shown["description"], shown["tags"]) == (new_name, "d", ["t1"])

    cli.ok("subnet", "delete", new_name)
    expect_error(api.get(f"/v2.0/subnets/{sub['id']}"), 404, "SubnetNotFound")
    assert api.show("networks", net["id"])["subnets"] == []


def test_subnet_ipv6_slaac_and_port(cli, api):
    net = api.network()
    sub = cli.json(
        "subnet", "create", "--network", net["id"], "--ip-version", "6",
        "--ipv6-ra-mode", "slaac", "--ipv6-address-mode", "slaac",
        "--subnet-range", "fd00:77::/64", uniq("cli-sub6"),
    )
    shown = api.show("subnets", sub["id"])
    assert (shown["ipv6_ra_mode"], shown["ipv6_address_mode"]) == ("slaac", "slaac")
    port = cli.json("port", "create", "--network", net["id"], uniq("cli-port"))
    got = api.show("ports", port["id"])
    assert ips_of(got) == [eui64("fd00:77::/64", got["mac_address"])]


def test_port_create_list_show_set_delete(cli, api):
    net, sub = api.network_with_subnet("10.78.0.0/24")
    sg = api.security_group()
    name = uniq("cli-port")
    port = cli.json(
        "port", "create", "--network", net["name"],
        "--fixed-ip", f"subnet={sub['name']},ip-address=10.78.0.10",
        "--security-group", sg["name"], name,
    )
    assert port["name"] == name
    shown = api.show("ports", port["id"])
    assert shown["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "10.78.0.10"}]
    assert shown["security_groups"] == [sg["id"]]
    assert shown["status"] == "DOWN"

    rows = cli.json("port", "list", "--network", net["name"])
    row = _row(rows, port["id"])
    assert row["Name"] == name
    assert row["MAC Address"] == shown["mac_address"]
    assert "10.78.0.10" in str(row["Fixed IP Addresses"])
    assert cli.json("port", "show", name)["id"] == port["id"]

    new_name, device = uniq("cli-port"), uniq("vm")
    cli.ok(
        "port", "set", "--name", new_name, "--description", "d", "--tag", "t1",
        "--device", device, "--device-owner", "compute:nova", name,
    )
    shown = api.show("ports", port["id"])
    assert (shown["name"], shown["description"], shown["tags"]) == (new_name, "d", ["t1"])
    assert (shown["device_id"], shown["device_owner"]) == (device, "compute:nova")
    assert [r["ID"] for r in cli.json("port", "list", "--device-id", device)] == [port["id"]]

    cli.ok("port", "delete", new_name)
    expect_error(api.get(f"/v2.0/ports/{port['id']}"), 404, "PortNotFound")
    # Its address is free again.
    again = api.port(net["id"], fixed_ips=[{"subnet_id": sub["id"], "ip_address": "10.78.0.10"}])
    assert ips_of(again) == ["10.78.0.10"]


def test_port_create_minimal_gets_default_group(cli, api):
    net, sub = api.network_with_subnet("10.79.0.0/24")
    port = cli.json("port", "create", "--network", net["id"], uniq("cli-port"))
    shown = api.show("ports", port["id"])
    assert [f["subnet_id"] for f in shown["fixed_ips"]] == [sub["id"]]
    defaults = api.list("security-groups", {"name": "default", "project_id": shown["project_id"]})
    assert shown["security_groups"] == [defaults[0]["id"]]


def test_security_group_and_rules(cli, api):
    name = uniq("cli-sg")
    sg = cli.json("security", "group", "create", "--description", "cli group", name)
    assert sg["name"] == name
    shown = api.show("security-groups", sg["id"])
    assert shown["description"] == "cli group"
    assert len(shown["security_group_rules"]) == 2

    assert _row(cli.json("security", "group", "list"), sg["id"])["Name"] == name
    assert cli.json("security", "group", "show", name)["id"] == sg["id"]

    ssh = cli.json(
        "security", "group", "rule", "create", "--ingress", "--protocol", "tcp",
        "--dst-port", "22", "--remote-ip", "0.0.0.0/0", name,
    )
    rule = api.show("security-group-rules", ssh["id"])
    assert rule["security_group_id"] == sg["id"]
    assert (rule["direction"], rule["ethertype"], rule["protocol"]) == ("ingress", "IPv4", "tcp")
    assert (rule["port_range_min"], rule["port_range_max"]) == (22, 22)
    assert rule["remote_ip_prefix"] == "0.0.0.0/0"

    icmp = cli.json("security", "group", "rule", "create", "--protocol", "icmp", name)
    assert api.show("security-group-rules", icmp["id"])["protocol"] == "icmp"

    rows = cli.json("security", "group", "rule", "list", name)
    assert sorted(r["ID"] for r in rows) == sorted(
        [r["id"] for r in shown["security_group_rules"]] + [ssh["id"], icmp["id"]]
    )
    assert cli.json("security", "group", "rule", "show", ssh["id"])["id"] == ssh["id"]

    cli.ok("security", "group", "rule", "delete", icmp["id"])
    expect_error(api.get(f"/v2.0/security-group-rules/{icmp['id']}"), 404, "SecurityGroupRuleNotFound")

    new_name = uniq("cli-sg")
    cli.ok("security", "group", "set", "--name", new_name, "--description", "renamed", "--tag", "x", name)
    shown = api.show("security-groups", sg["id"])
    assert (shown["name"], shown["description"], shown["tags"]) == (new_name, "renamed", ["x"])

    cli.ok("security", "group", "delete", new_name)
    expect_error(api.get(f"/v2.0/security-groups/{sg['id']}"), 404, "SecurityGroupNotFound")
    expect_error(api.get(f"/v2.0/security-group-rules/{ssh['id']}"), 404, "SecurityGroupRuleNotFound")


# ---------------------------------------------------------------------------
# Errors: non-zero exit, the server's message, nothing changed
# ---------------------------------------------------------------------------


def test_subnet_invalid_cidr_fails(cli, api):
    net = api.network()
    res = cli.fails(
        "subnet", "create", "--network", net["id"], "--subnet-range", "10.0.0.300/24", uniq("bad")
    )
    assert "BadRequestException: 400" in res.stderr, res
    assert "10.0.0.300/24" in res.stderr
    assert api.show("networks", net["id"])["subnets"] == []


def test_overlapping_subnet_fails(cli, api):
    net, sub = api.network_with_subnet("10.80.0.0/16")
    res = cli.fails("subnet", "create", "--network", net["id"], "--subnet-range", "10.80.1.0/24", uniq("ovl"))
    assert "400" in res.stderr, res
    assert api.show("networks", net["id"])["subnets"] == [sub["id"]]


def test_port_ip_in_use_fails(cli, api):
    net, sub = api.network_with_subnet("10.81.0.0/24")
    api.port(net["id"], fixed_ips=[{"subnet_id": sub["id"], "ip_address": "10.81.0.10"}])
    res = cli.fails(
        "port", "create", "--network", net["id"],
        "--fixed-ip", f"subnet={sub['id']},ip-address=10.81.0.10", uniq("dup"),
    )
    assert "409" in res.stderr, res
    assert len(api.list("ports", {"network_id": net["id"]})) == 1


def test_duplicate_rule_fails(cli, api):
    sg = api.security_group()
    args = ["security", "group", "rule", "create", "--ingress", "--protocol", "tcp", "--dst-port", "80", sg["id"]]
    cli.ok(*args)
    res = cli.fails(*args)
    assert "409" in res.stderr, res
    assert len(api.show("security-groups", sg["id"])["security_group_rules"]) == 3


def test_network_delete_in_use_fails(cli, api):
    net, sub = api.network_with_subnet("10.82.0.0/24")
    port = api.port(net["id"])
    cli.fails("network", "delete", net["name"])
    assert api.show("networks", net["id"])["subnets"] == [sub["id"]]
    assert api.show("ports", port["id"])["id"] == port["id"]


def test_security_group_in_use_delete_fails(cli, api):
    net = api.network()
    sg = api.security_group()
    api.port(net["id"], security_groups=[sg["id"]])
    cli.fails("security", "group", "delete", sg["id"])
    assert api.show("security-groups", sg["id"])["id"] == sg["id"]


def test_show_missing_fails(cli):
    missing = uniq("missing")
    res = cli.fails("network", "show", missing)
    assert missing in res.stderr, res
    cli.fails("port", "show", missing)
    cli.fails("security", "group", "show", missing)


def test_ambiguous_name_fails(cli, api):
    name = uniq("twin")
    api.network(name=name)
    api.network(name=name)
    res = cli.fails("network", "show", name)
    assert "More than one" in res.stderr, res
