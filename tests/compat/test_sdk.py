"""openstacksdk against vnet.

Connected with `Connection(auth_type="none", auth={"endpoint": URL})`; a
project's scope rides in `conn.session.additional_headers` (X-Project-Id,
X-Roles). With no headers the SDK acts as admin of vnet's default project.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import openstack.exceptions as osexc
import pytest

from helpers import eui64, uniq


def _project_conn(sdk, roles="member"):
    project = uniq("proj")
    return project, sdk(project=project, roles=roles)


def test_network_crud(sdk):
    conn = sdk()
    name = uniq("sdk-net")
    net = conn.network.create_network(name=name, description="d1")
    assert net.id and net.name == name and net.description == "d1"
    assert net.status == "ACTIVE" and net.is_admin_state_up is True
    assert net.mtu == 1450 and net.provider_network_type == "vxlan"
    assert isinstance(net.provider_segmentation_id, int)
    assert net.is_shared is False and net.subnet_ids == []

    assert conn.network.get_network(net.id).name == name
    assert conn.network.find_network(name).id == net.id
    assert [n.id for n in conn.network.networks(name=name)] == [net.id]

    new_name = uniq("sdk-net")
    # (update_* updates the object passed in: pass the id to keep `net` as created)
    upd = conn.network.update_network(net.id, name=new_name, description="d2", is_admin_state_up=False)
    assert (upd.name, upd.description, upd.is_admin_state_up) == (new_name, "d2", False)
    assert upd.revision_number > net.revision_number
    assert [n.id for n in conn.network.networks(name=new_name, is_admin_state_up=False)] == [net.id]

    conn.network.delete_network(net, ignore_missing=False)
    assert conn.network.find_network(new_name) is None
    with pytest.raises(osexc.NotFoundException):
        conn.network.get_network(net.id)
    with pytest.raises(osexc.NotFoundException):
        conn.network.delete_network(net.id, ignore_missing=False)


def test_subnet_crud(sdk):
    conn = sdk()
    net = conn.network.create_network(name=uniq("sdk-net"))
    name = uniq("sdk-sub")
    sub = conn.network.create_subnet(
        network_id=net.id, ip_version=4, cidr="10.90.0.0/24", name=name,
        dns_nameservers=["10.90.0.53"],
    )
    assert sub.cidr == "10.90.0.0/24" and sub.gateway_ip == "10.90.0.1"
    assert sub.allocation_pools == [{"start": "10.90.0.2", "end": "10.90.0.254"}]
    assert sub.is_dhcp_enabled is True and sub.dns_nameservers == ["10.90.0.53"]
    assert conn.network.get_network(net.id).subnet_ids == [sub.id]
    assert [s.id for s in conn.network.subnets(network_id=net.id)] == [sub.id]
    assert conn.network.find_subnet(name).id == sub.id

    upd = conn.network.update_subnet(sub.id, name="renamed", dns_nameservers=[])
    assert upd.name == "renamed" and upd.dns_nameservers == []

    conn.network.delete_subnet(sub, ignore_missing=False)
    assert conn.network.get_network(net.id).subnet_ids == []
    with pytest.raises(osexc.NotFoundException):
        conn.network.get_subnet(sub.id)


def test_port_crud(sdk):
    conn = sdk()
    net = conn.network.create_network(name=uniq("sdk-net"))
    sub = conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.91.0.0/24")
    sg = conn.network.create_security_group(name=uniq("sdk-sg"))
    port = conn.network.create_port(
        network_id=net.id,
        name="p1",
        fixed_ips=[{"subnet_id": sub.id, "ip_address": "10.91.0.10"}],
        security_group_ids=[sg.id],
    )
    assert port.fixed_ips == [{"subnet_id": sub.id, "ip_address": "10.91.0.10"}]
    assert port.security_group_ids == [sg.id]
    assert port.status == "DOWN" and port.mac_address.startswith("fa:16:3e:")
    assert port.binding_vif_type == "unbound" and port.binding_host_id == ""

    assert [p.id for p in conn.network.ports(network_id=net.id)] == [port.id]
    assert [p.id for p in conn.network.ports(fixed_ips=["ip_address=10.91.0.10"], network_id=net.id)] == [port.id]

    device = uniq("vm")
    upd = conn.network.update_port(
        port.id, name="p2", device_id=device, allowed_address_pairs=[{"ip_address": "10.91.0.200"}]
    )
    assert upd.name == "p2" and upd.device_id == device
    assert upd.allowed_address_pairs == [{"ip_address": "10.91.0.200", "mac_address": port.mac_address}]
    assert [p.id for p in conn.network.ports(device_id=device)] == [port.id]

    conn.network.delete_port(port, ignore_missing=False)
    with pytest.raises(osexc.NotFoundException):
        conn.network.get_port(port.id)
    assert conn.network.create_port(
        network_id=net.id, fixed_ips=[{"subnet_id": sub.id, "ip_address": "10.91.0.10"}]
    ).fixed_ips[0]["ip_address"] == "10.91.0.10"


def test_security_group_and_rules(sdk):
    conn = sdk()
    sg = conn.network.create_security_group(name=uniq("sdk-sg"), description="d")
    assert sorted((r["direction"], r["ethertype"]) for r in sg.security_group_rules) == [
        ("egress", "IPv4"),
        ("egress", "IPv6"),
    ]
    rule = conn.network.create_security_group_rule(
        security_group_id=sg.id, direction="ingress", ethertype="IPv4", protocol="tcp",
        port_range_min=22, port_range_max=22, remote_ip_prefix="0.0.0.0/0",
    )
    assert (rule.protocol, rule.port_range_min, rule.port_range_max) == ("tcp", 22, 22)
    ids = sorted(r.id for r in conn.network.security_group_rules(security_group_id=sg.id))
    assert len(ids) == 3 and rule.id in ids
    assert len(conn.network.get_security_group(sg.id).security_group_rules) == 3
    with pytest.raises(osexc.ConflictException):
        conn.network.create_security_group_rule(
            security_group_id=sg.id, direction="ingress", ethertype="IPv4", protocol="tcp",
            port_range_min=22, port_range_max=22, remote_ip_prefix="0.0.0.0/0",
        )
    conn.network.delete_security_group_rule(rule, ignore_missing=False)
    assert len(list(conn.network.security_group_rules(security_group_id=sg.id))) == 2

    upd = conn.network.update_security_group(sg, name="renamed")
    assert upd.name == "renamed"
    conn.network.delete_security_group(sg, ignore_missing=False)
    with pytest.raises(osexc.NotFoundException):
        conn.network.get_security_group(sg.id)


def test_default_security_group(sdk):
    project, conn = _project_conn(sdk)
    groups = list(conn.network.security_groups())
    assert [g.name for g in groups] == ["default"]
    sg = groups[0]
    assert sg.project_id == project
    got = sorted((r["direction"], r["ethertype"], r["remote_group_id"]) for r in sg.security_group_rules)
    assert got == [
        ("egress", "IPv4", None),
        ("egress", "IPv6", None),
        ("ingress", "IPv4", sg.id),
        ("ingress", "IPv6", sg.id),
    ]
    net = conn.network.create_network(name=uniq("sdk-net"))
    conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.92.0.0/24")
    port = conn.network.create_port(network_id=net.id)
    assert port.security_group_ids == [sg.id]
    assert conn.network.find_security_group("default").id == sg.id


def test_pagination(sdk):
    project, conn = _project_conn(sdk)
    urls = []
    conn.session.session.hooks["response"].append(lambda r, *a, **k: urls.append(r.url))
    names = [f"n{i}" for i in range(7)]
    for name in names:
        conn.network.create_network(name=name)
    urls.clear()
    query = dict(project_id=project, sort_key="name")  # leave others' shared networks out
    got = [n.name for n in conn.network.networks(limit=2, sort_dir="asc", **query)]
    assert got == names
    list_urls = [u for u in urls if "/v2.0/networks" in u]
    markers = [parse_qs(urlparse(u).query).get("marker") for u in list_urls]
    assert sum(1 for m in markers if m) >= 3, f"the SDK did not page: {list_urls}"
    got_desc = [n.name for n in conn.network.networks(limit=3, sort_dir="desc", **query)]
    assert got_desc == names[::-1]


def test_filters(sdk):
    project, conn = _project_conn(sdk)
    a = conn.network.create_network(name="a")
    b = conn.network.create_network(name="b", is_shared=False)
    conn.network.set_tags(b, ["blue"])
    assert [n.id for n in conn.network.networks(name="a")] == [a.id]
    assert [n.id for n in conn.network.networks(tags="blue")] == [b.id]
    assert [n.id for n in conn.network.networks(project_id=project, sort_key="name")] == [a.id, b.id]
    sub = conn.network.create_subnet(network_id=a.id, ip_version=4, cidr="10.93.0.0/24")
    assert [s.id for s in conn.network.subnets(cidr="10.93.0.0/24")] == [sub.id]
    assert list(conn.network.subnets(cidr="10.94.0.0/24")) == []
    port = conn.network.create_port(network_id=a.id, device_owner="compute:nova")
    assert [p.id for p in conn.network.ports(device_owner="compute:nova")] == [port.id]
    assert [p.id for p in conn.network.ports(mac_address=port.mac_address)] == [port.id]


def test_tags(sdk):
    conn = sdk()
    net = conn.network.create_network(name=uniq("sdk-net"))
    conn.network.set_tags(net, ["x", "y"])
    assert sorted(conn.network.get_network(net.id).tags) == ["x", "y"]
    conn.network.set_tags(net, [])
    assert conn.network.get_network(net.id).tags == []


def test_ipv6_slaac_eui64(sdk):
    conn = sdk()
    net = conn.network.create_network(name=uniq("sdk-net"))
    v4 = conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.95.0.0/24")
    v6 = conn.network.create_subnet(
        network_id=net.id, ip_version=6, cidr="fd00:95::/64",
        ipv6_ra_mode="slaac", ipv6_address_mode="slaac",
    )
    assert v6.gateway_ip == "fd00:95::"
    port = conn.network.create_port(network_id=net.id)
    by_subnet = {f["subnet_id"]: f["ip_address"] for f in port.fixed_ips}
    assert set(by_subnet) == {v4.id, v6.id}
    assert by_subnet[v6.id] == eui64("fd00:95::/64", port.mac_address)
    # dhcpv6-stateless is SLAAC for addresses too.
    net2 = conn.network.create_network(name=uniq("sdk-net"))
    conn.network.create_subnet(
        network_id=net2.id, ip_version=6, cidr="fd00:96::/64",
        ipv6_ra_mode="dhcpv6-stateless", ipv6_address_mode="dhcpv6-stateless",
    )
    port2 = conn.network.create_port(network_id=net2.id)
    assert [f["ip_address"] for f in port2.fixed_ips] == [eui64("fd00:96::/64", port2.mac_address)]


def test_bulk_create(sdk):
    conn = sdk()
    net = conn.network.create_network(name=uniq("sdk-net"))
    conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.97.0.0/24")
    ports = list(
        conn.network.create_ports([{"network_id": net.id, "name": f"b{i}"} for i in range(4)])
    )
    assert [p.name for p in ports] == ["b0", "b1", "b2", "b3"]
    assert len({p.fixed_ips[0]["ip_address"] for p in ports}) == 4
    assert sorted(p.id for p in conn.network.ports(network_id=net.id)) == sorted(p.id for p in ports)

    sg = conn.network.create_security_group(name=uniq("sdk-sg"))
    rules = list(
        conn.network.create_security_group_rules(
            [
                {"security_group_id": sg.id, "direction": "ingress", "protocol": "tcp",
                 "port_range_min": p, "port_range_max": p, "ethertype": "IPv4"}
                for p in (80, 443)
            ]
        )
    )
    assert sorted(r.port_range_min for r in rules) == [80, 443]
    assert len(conn.network.get_security_group(sg.id).security_group_rules) == 4


def test_if_revision(sdk):
    conn = sdk()
    net = conn.network.create_network(name=uniq("sdk-net"))
    rev = net.revision_number
    upd = conn.network.update_network(net.id, name="ok", if_revision=rev)
    assert upd.name == "ok" and upd.revision_number > rev
    with pytest.raises(osexc.PreconditionFailedException):
        conn.network.update_network(net.id, name="stale", if_revision=rev)
    assert conn.network.get_network(net.id).name == "ok"


def test_errors(sdk):
    conn = sdk()
    net = conn.network.create_network(name=uniq("sdk-net"))
    with pytest.raises(osexc.BadRequestException):
        conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.0.0.300/24")
    sub = conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.98.0.0/24")
    conn.network.create_port(network_id=net.id, fixed_ips=[{"subnet_id": sub.id, "ip_address": "10.98.0.5"}])
    with pytest.raises(osexc.ConflictException) as e:
        conn.network.create_port(network_id=net.id, fixed_ips=[{"subnet_id": sub.id, "ip_address": "10.98.0.5"}])
    assert e.value.status_code == 409
    with pytest.raises(osexc.ConflictException):
        conn.network.delete_network(net, ignore_missing=False)
    with pytest.raises(osexc.NotFoundException):
        conn.network.create_port(network_id="00000000-0000-0000-0000-000000000000")


def test_project_scoping(sdk):
    pa, a = _project_conn(sdk)
    pb, b = _project_conn(sdk)
    net = a.network.create_network(name=uniq("sdk-net"))
    assert net.project_id == pa
    with pytest.raises(osexc.NotFoundException):
        b.network.get_network(net.id)
    assert b.network.find_network(net.name) is None
    assert net.id not in [n.id for n in b.network.networks()]
    with pytest.raises(osexc.NotFoundException):
        b.network.update_network(net.id, name="x")
    with pytest.raises(osexc.NotFoundException):
        b.network.delete_network(net.id, ignore_missing=False)
    assert a.network.get_network(net.id).name == net.name
    # The default (admin) connection sees both.
    admin = sdk()
    assert admin.network.get_network(net.id).project_id == pa
    owned = admin.network.create_network(name=uniq("sdk-net"), project_id=pb)
    assert [n.id for n in b.network.networks(project_id=pb)] == [owned.id]
