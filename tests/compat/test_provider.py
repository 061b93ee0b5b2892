"""Flat provider networks: `provider:network_type flat` with
`provider:physical_network`, admin only, checked as Neutron's type drivers
check them, one per physical network; agents report the physical networks
they map (and whether they are gateway hosts), and a flat network's port binds
only to a host whose agent maps its physical network.

The operator's command of the README, `openstack network create --external
--provider-network-type flat --provider-physical-network external public`,
runs on a server of its own: a physical network holds one flat network."""

from __future__ import annotations

from helpers import Cli, expect, expect_error, uniq

# The admin's networks here belong to fresh projects: the shared server's
# admin project stays within its network quota however many tests run.
from test_hosts import registration


def test_the_cli_creates_the_external_flat_network(fresh_server):
    cli, api = Cli(fresh_server.url), fresh_server.api()
    net = cli.json(
        "network", "create", "--external", "--provider-network-type", "flat",
        "--provider-physical-network", "external", "public",
    )
    assert net["provider:network_type"] == "flat"
    assert net["provider:physical_network"] == "external"
    assert net["provider:segmentation_id"] is None
    shown = api.show("networks", net["id"])
    assert shown["router:external"] is True
    assert (shown["provider:network_type"], shown["provider:physical_network"]) == ("flat", "external")
    assert shown["provider:segmentation_id"] is None
    value = cli.ok("network", "show", "public", "-f", "value", "-c", "provider:physical_network")
    assert value.stdout.strip() == "external"

    sub = cli.json(
        "subnet", "create", "--network", "public", "--subnet-range", "203.0.113.0/24",
        "--gateway", "203.0.113.1", "public-v4",
    )
    assert api.show("subnets", sub["id"])["gateway_ip"] == "203.0.113.1"

    # One flat network per physical network, as Neutron answers.
    res = cli.fails(
        "network", "create", "--provider-network-type", "flat",
        "--provider-physical-network", "external", "public2",
    )
    assert "Physical network external is in use" in res.stderr, res
    err = expect_error(
        api.post("/v2.0/networks", {"network": {
            "provider:network_type": "flat", "provider:physical_network": "external"}}),
        409, "FlatNetworkInUse",
    )
    assert err["message"] == "Unable to create the flat network. Physical network external is in use."

    # Deleted, the physical network is free again.
    cli.ok("subnet", "delete", "public-v4")
    cli.ok("network", "delete", "public")
    again = cli.json(
        "network", "create", "--provider-network-type", "flat",
        "--provider-physical-network", "external", "public",
    )
    assert again["provider:physical_network"] == "external"


def test_bad_provider_combinations_get_neutrons_400s(api):
    physnet = uniq("phys")
    for attrs, message in [
        ({"provider:network_type": "flat"}, "physical_network required for flat provider network"),
        (
            {"provider:network_type": "flat", "provider:physical_network": physnet,
             "provider:segmentation_id": 5},
            "segmentation_id prohibited for flat provider network",
        ),
        (
            {"provider:network_type": "vxlan", "provider:physical_network": physnet},
            "physical_network prohibited for vxlan provider network",
        ),
        ({"provider:physical_network": physnet}, "network_type required"),
        (
            {"provider:network_type": "vlan", "provider:physical_network": physnet},
            "network_type value 'vlan' not supported",
        ),
    ]:
        err = expect_error(api.post("/v2.0/networks", {"network": attrs}), 400, "InvalidInput")
        assert err["message"] == f"Invalid input for operation: {message}.", attrs
    # None of them took the physical network.
    net = api.network(**{"project_id": uniq("prov"), "provider:network_type": "flat",
                      "provider:physical_network": physnet})
    assert net["provider:physical_network"] == physnet


def test_provider_attributes_are_admin_only(api, tenant):
    member = tenant()
    physnet = uniq("phys")
    expect_error(
        member.post("/v2.0/networks", {"network": {
            "provider:network_type": "flat", "provider:physical_network": physnet}}),
        403, None,
    )
    expect_error(
        member.post("/v2.0/networks", {"network": {"provider:physical_network": physnet}}),
        403, None,
    )
    flat = api.network(**{
        "project_id": uniq("prov"), "shared": True, "provider:network_type": "flat", "provider:physical_network": physnet})
    seen = member.show("networks", flat["id"])
    assert not {"provider:network_type", "provider:physical_network",
                "provider:segmentation_id"} & set(seen)


def test_agents_report_mappings_and_flat_ports_bind_only_where_mapped(api, cli):
    physnet = uniq("phys")
    mapped, bare = uniq("host"), uniq("host")
    expect(api.put(f"/vnet/v1/hosts/{mapped}",
                   registration(mapped, physical_networks=[physnet], gateway=True)), 200)
    expect(api.put(f"/vnet/v1/hosts/{bare}", registration(bare)), 200)
    host = expect(api.get(f"/vnet/v1/hosts/{mapped}"), 200)["host"]
    assert host["physical_networks"] == [physnet] and host["gateway"] is True

    agents = {a["Host"]: a for a in cli.json("network", "agent", "list", "--long")}
    assert mapped in agents and bare in agents
    shown = cli.json("network", "agent", "show", agents[mapped]["ID"])
    assert shown["configuration"]["physical_networks"] == [physnet]
    assert shown["configuration"]["gateway"] is True
    assert cli.json("network", "agent", "show", agents[bare]["ID"])["configuration"]["gateway"] is False

    net = api.network(**{"project_id": uniq("prov"), "provider:network_type": "flat",
                      "provider:physical_network": physnet})
    good = api.port(net["id"], **{"binding:host_id": mapped})
    assert good["binding:vif_type"] == "bridge"
    failed = api.port(net["id"], **{"binding:host_id": bare})
    assert failed["binding:vif_type"] == "binding_failed"
    assert failed["status"] == "DOWN"
    row = cli.json("port", "show", failed["id"])
    assert row["binding_vif_type"] == "binding_failed"

    # The agent comes back mapping it: the port binds.
    expect(api.put(f"/vnet/v1/hosts/{bare}", registration(bare, physical_networks=[physnet])), 200)
    assert api.show("ports", failed["id"])["binding:vif_type"] == "bridge"
