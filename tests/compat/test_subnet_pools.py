"""Subnet pools (`subnet_allocation`, `default-subnetpools`,
`subnetpool-prefix-ops`) with the `openstack` CLI, openstacksdk and raw HTTP.

Neutron's behaviour, from neutron/ipam/subnet_alloc.py and
neutron/db/db_base_plugin_v2.py: a pool's prefixes are merged and only grow
by update; a subnet without a CIDR gets the smallest free block that holds
its prefix length; a pool with subnets is not deleted
(`SubnetPoolDeleteError`, 400); private pools are their project's alone.
One deliberate difference: an exhausted pool answers 409 (Neutron's
`SubnetAllocationError` maps to no status there and leaves as a 500).
"""

from __future__ import annotations

import ipaddress

from helpers import expect, expect_error, uniq


def _pool(api, prefixes, **attrs):
    attrs.setdefault("name", uniq("pool"))
    return expect(
        api.post("/v2.0/subnetpools", {"subnetpool": {"prefixes": prefixes, **attrs}}), 201
    )["subnetpool"]


def _from_pool(api, network_id, pool_id, **attrs):
    body = {"network_id": network_id, "ip_version": 4, "subnetpool_id": pool_id, **attrs}
    return api.post("/v2.0/subnets", {"subnet": body})


def _overlaps(cidrs):
    nets = [ipaddress.ip_network(c) for c in cidrs]
    return [(a, b) for i, a in enumerate(nets) for b in nets[i + 1 :] if a.overlaps(b)]


def test_cli_pool_create_allocate_grow_and_delete_in_use(cli, api):
    name, net_name = uniq("P"), uniq("N")
    pool = cli.json(
        "subnet", "pool", "create", "--pool-prefix", "10.10.0.0/16",
        "--default-prefix-length", "24", name,
    )
    assert pool["prefixes"] == ["10.10.0.0/16"]
    shown = api.get(f"/v2.0/subnetpools/{pool['id']}").json()["subnetpool"]
    assert shown["ip_version"] == 4
    assert (shown["default_prefixlen"], shown["min_prefixlen"], shown["max_prefixlen"]) == (24, 8, 32)
    assert shown["is_default"] is False and shown["shared"] is False
    assert shown["address_scope_id"] is None and shown["default_quota"] is None
    assert shown["revision_number"] == 0

    net = cli.json("network", "create", net_name)
    small = cli.json(
        "subnet", "create", "--subnet-pool", name, "--prefix-length", "26",
        "--network", net_name, uniq("S"),
    )
    assert small["cidr"] == "10.10.0.0/26"
    assert small["subnetpool_id"] == pool["id"]
    assert small["gateway_ip"] == "10.10.0.1"
    # The pool's default length; the smallest free block that holds it.
    default = cli.json("subnet", "create", "--subnet-pool", name, "--network", net_name, uniq("S"))
    assert default["cidr"] == "10.10.1.0/24"
    assert api.show("subnets", default["id"])["subnetpool_id"] == pool["id"]
    listed = api.list("subnets", {"subnetpool_id": pool["id"]})
    assert sorted(s["id"] for s in listed) == sorted([small["id"], default["id"]])

    cli.ok("subnet", "pool", "set", "--pool-prefix", "10.20.0.0/16", name)
    shown = api.get(f"/v2.0/subnetpools/{pool['id']}").json()["subnetpool"]
    assert shown["prefixes"] == ["10.10.0.0/16", "10.20.0.0/16"]
    assert shown["revision_number"] == 1

    res = cli.fails("subnet", "pool", "delete", name)
    assert "existing allocations" in res.stderr
    expect_error(api.delete(f"/v2.0/subnetpools/{pool['id']}"), 400, "SubnetPoolDeleteError")
    assert api.get(f"/v2.0/subnetpools/{pool['id']}").status_code == 200

    cli.ok("subnet", "delete", small["id"], default["id"])
    cli.ok("subnet", "pool", "delete", name)
    expect_error(api.get(f"/v2.0/subnetpools/{pool['id']}"), 404, "SubnetPoolNotFound")
    cli.ok("network", "delete", net["id"])


def test_allocations_never_overlap_until_the_pool_is_exhausted(api):
    pool = _pool(api, ["10.30.0.0/22"], default_prefixlen=24, min_prefixlen=22, max_prefixlen=26)
    nets = [api.network()["id"] for _ in range(3)]
    cidrs = []
    for i, length in enumerate([24, 26, 25, 24, 26, 24]):
        s = expect(_from_pool(api, nets[i % 3], pool["id"], prefixlen=length), 201)["subnet"]
        cidrs.append(s["cidr"])
    assert not _overlaps(cidrs), cidrs
    # Each in the smallest free block that holds it, so /24s stay whole.
    assert cidrs == [
        "10.30.0.0/24", "10.30.1.0/26", "10.30.1.128/25", "10.30.2.0/24", "10.30.1.64/26",
        "10.30.3.0/24",
    ]

    before = api.list("subnets", {"subnetpool_id": pool["id"]})
    err = expect_error(_from_pool(api, nets[0], pool["id"]), 409, "SubnetAllocationError")
    assert err["message"] == (
        "Failed to allocate subnet: Insufficient prefix space to allocate subnet size /24."
    )
    assert api.list("subnets", {"subnetpool_id": pool["id"]}) == before

    err = expect_error(
        _from_pool(api, nets[0], pool["id"], prefixlen=27), 400, "MaxPrefixSubnetAllocationError"
    )
    assert err["message"] == (
        "Unable to allocate subnet with prefix length 27, maximum allowed prefix is 26."
    )
    expect_error(
        _from_pool(api, nets[0], pool["id"], prefixlen=21), 400, "MinPrefixSubnetAllocationError"
    )
    # A given CIDR must be free in the pool.
    taken = _from_pool(api, nets[1], pool["id"], cidr="10.30.0.0/25")
    expect_error(taken, 409, "SubnetAllocationError")
    expect_error(
        _from_pool(api, nets[1], pool["id"], cidr="10.30.0.0/24", prefixlen=24),
        400,
        "BadRequest",
    )


def test_a_given_cidr_inside_the_pool_and_affinity(api):
    pool = _pool(api, ["10.40.0.0/16"], default_prefixlen=24)
    other = _pool(api, ["10.41.0.0/16"], default_prefixlen=24)
    net = api.network()
    s = expect(_from_pool(api, net["id"], pool["id"], cidr="10.40.7.0/24"), 201)["subnet"]
    assert (s["cidr"], s["subnetpool_id"]) == ("10.40.7.0/24", pool["id"])
    expect_error(
        _from_pool(api, api.network()["id"], pool["id"], cidr="10.99.0.0/24"),
        409,
        "SubnetAllocationError",
    )
    # One network's IPv4 subnets come from one pool (or none).
    expect_error(_from_pool(api, net["id"], other["id"]), 400, "NetworkSubnetPoolAffinityError")
    plain = api.post(
        "/v2.0/subnets",
        {"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": "192.168.50.0/24"}},
    )
    expect_error(plain, 400, "NetworkSubnetPoolAffinityError")
    # No CIDR and no pool; allocation pools without a CIDR.
    err = expect_error(
        api.post("/v2.0/subnets", {"subnet": {"network_id": api.network()["id"], "ip_version": 4}}),
        400,
        "BadRequest",
    )
    assert "a subnetpool must be specified in the absence of a cidr" in err["message"]
    pools = [{"start": "10.40.9.10", "end": "10.40.9.20"}]
    expect_error(
        _from_pool(api, net["id"], pool["id"], allocation_pools=pools), 400, "BadRequest"
    )
    expect_error(
        _from_pool(api, net["id"], "0b4c3e4e-0000-4000-8000-000000000000"),
        404,
        "SubnetPoolNotFound",
    )
    v6 = api.post(
        "/v2.0/subnets",
        {"subnet": {"network_id": net["id"], "ip_version": 6, "subnetpool_id": pool["id"]}},
    )
    assert "Cannot allocate IPv6 subnet from IPv4 subnet pool" in expect_error(
        v6, 400, "BadRequest"
    )["message"]


def test_pool_attributes_are_checked_as_neutron_does(api):
    cases = [
        ({"prefixes": ["10.0.0.0/8", "fd00::/8"]}, "PrefixVersionMismatch"),
        ({"prefixes": []}, "EmptySubnetPoolPrefixList"),
        ({"prefixes": ["10.0.0.0/8"], "min_prefixlen": 24, "max_prefixlen": 16},
         "IllegalSubnetPoolPrefixBounds"),
        ({"prefixes": ["10.0.0.0/8"], "max_prefixlen": 33}, "IllegalSubnetPoolPrefixBounds"),
        ({"prefixes": ["10.0.0.0/8"], "default_prefixlen": 4}, "IllegalSubnetPoolPrefixBounds"),
        ({"prefixes": ["10.0.0.300/8"]}, "HTTPBadRequest"),
        ({"prefixes": ["10.0.0.0"]}, "HTTPBadRequest"),
        ({"prefixes": ["10.0.0.0/8"], "ip_version": 4}, "HTTPBadRequest"),
        ({"prefixes": ["10.0.0.0/8"], "address_scope_id": "x"}, "InvalidInput"),
        ({"name": "no-prefixes"}, "HTTPBadRequest"),
    ]
    for body, error in cases:
        expect_error(api.post("/v2.0/subnetpools", {"subnetpool": body}), 400, error)
    err = expect_error(
        api.post("/v2.0/subnetpools", {"subnetpool": {"prefixes": ["10.0.0.0/8"], "max_prefixlen": 33}}),
        400,
        None,
    )
    assert err["message"] == "Illegal prefix bounds: max_prefixlen=33, ip_version_max=32."

    pool = _pool(api, ["10.50.0.1/16", "10.51.0.0/16", "10.50.128.0/17"], address_scope_id=None)
    assert pool["prefixes"] == ["10.50.0.0/15"]
    v6 = _pool(api, ["fd00:50::/48"])
    assert (v6["ip_version"], v6["min_prefixlen"], v6["default_prefixlen"], v6["max_prefixlen"]) == (
        6, 64, 64, 128,
    )
    # Prefixes only grow by update; a refused update changes nothing.
    shrink = api.put(
        f"/v2.0/subnetpools/{pool['id']}", {"subnetpool": {"prefixes": ["10.50.0.0/16"]}}
    )
    err = expect_error(shrink, 400, "IllegalSubnetPoolPrefixUpdate")
    assert err["message"] == (
        "Illegal update to prefixes: Existing prefixes must be a subset of the new prefixes."
    )
    for body in ({"shared": True}, {"ip_version": 6}, {"prefixes": ["fd00::/8", "10.50.0.0/15"]}):
        resp = api.put(f"/v2.0/subnetpools/{pool['id']}", {"subnetpool": body})
        assert resp.status_code == 400, resp.text
    assert api.get(f"/v2.0/subnetpools/{pool['id']}").json()["subnetpool"] == pool
    updated = api.put(
        f"/v2.0/subnetpools/{pool['id']}",
        {"subnetpool": {"min_prefixlen": 20, "default_prefixlen": 22, "description": "d"}},
    ).json()["subnetpool"]
    assert (updated["min_prefixlen"], updated["default_prefixlen"], updated["description"]) == (
        20, 22, "d",
    )


def test_prefix_ops_add_and_remove(api):
    pool = _pool(api, ["10.60.0.0/24"], default_prefixlen=26)
    net = api.network()
    used = expect(_from_pool(api, net["id"], pool["id"]), 201)["subnet"]
    assert used["cidr"] == "10.60.0.0/26"
    url = f"/v2.0/subnetpools/{pool['id']}"

    added = expect(api.put(f"{url}/add_prefixes", {"prefixes": ["10.60.1.0/24", "10.70.0.0/24"]}), 200)
    assert added == {"prefixes": ["10.60.0.0/23", "10.70.0.0/24"]}
    assert api.get(url).json()["subnetpool"]["prefixes"] == added["prefixes"]

    in_use = api.put(f"{url}/remove_prefixes", {"prefixes": ["10.60.0.0/25"]})
    err = expect_error(in_use, 400, "IllegalSubnetPoolPrefixUpdate")
    assert "in use by a subnet" in err["message"]
    removed = expect(api.put(f"{url}/remove_prefixes", {"prefixes": ["10.60.1.0/25", "10.70.0.0/24"]}), 200)
    assert removed == {"prefixes": ["10.60.0.0/24", "10.60.1.128/25"]}
    # Outside the pool: nothing to do.
    assert expect(api.put(f"{url}/remove_prefixes", {"prefixes": ["192.0.2.0/24"]}), 200) == removed
    # What was removed is not allocated any more.
    expect_error(
        _from_pool(api, api.network()["id"], pool["id"], cidr="10.60.1.0/26"),
        409,
        "SubnetAllocationError",
    )
    for body in ({}, {"prefixes": []}, {"prefixes": "10.0.0.0/8"}):
        expect_error(api.put(f"{url}/add_prefixes", body), 400, "HTTPBadRequest")
    expect_error(api.put(f"{url}/add_prefixes", {"prefixes": ["nope"]}), 400, "HTTPBadRequest")
    expect_error(api.put(f"{url}/add_prefixes", {"prefixes": ["fd00::/64"]}), 400, "PrefixVersionMismatch")
    expect_error(api.put(f"{url}/grow", {"prefixes": ["10.0.0.0/8"]}), 404, None)
    assert api.get(url).json()["subnetpool"]["prefixes"] == removed["prefixes"]


def test_private_pools_stay_private_and_shared_ones_are_everyones(api, tenant):
    a, b = tenant(), tenant()
    private = _pool(a, ["10.80.0.0/16"], default_prefixlen=24)
    assert private["project_id"] == a.project
    assert private["id"] not in [p["id"] for p in b.get("/v2.0/subnetpools").json()["subnetpools"]]
    expect_error(b.get(f"/v2.0/subnetpools/{private['id']}"), 404, "SubnetPoolNotFound")
    expect_error(
        b.put(f"/v2.0/subnetpools/{private['id']}", {"subnetpool": {"name": "x"}}),
        404,
        "SubnetPoolNotFound",
    )
    expect_error(b.put(f"/v2.0/subnetpools/{private['id']}/add_prefixes", {"prefixes": ["10.81.0.0/16"]}), 404, "SubnetPoolNotFound")
    expect_error(b.delete(f"/v2.0/subnetpools/{private['id']}"), 404, "SubnetPoolNotFound")
    expect_error(_from_pool(b, b.network()["id"], private["id"]), 404, "SubnetPoolNotFound")
    assert api.get(f"/v2.0/subnetpools/{private['id']}").status_code == 200  # admins see all

    expect_error(
        a.post("/v2.0/subnetpools", {"subnetpool": {"prefixes": ["10.82.0.0/16"], "shared": True}}),
        403,
        None,
    )
    shared = _pool(api, ["10.83.0.0/16"], default_prefixlen=24, shared=True)
    assert shared["id"] in [p["id"] for p in b.get("/v2.0/subnetpools").json()["subnetpools"]]
    s = expect(_from_pool(b, b.network()["id"], shared["id"]), 201)["subnet"]
    assert (s["project_id"], s["subnetpool_id"]) == (b.project, shared["id"])
    expect_error(
        b.put(f"/v2.0/subnetpools/{shared['id']}", {"subnetpool": {"name": "mine"}}), 403, None
    )
    expect_error(b.delete(f"/v2.0/subnetpools/{shared['id']}"), 403, None)
    filtered = b.get("/v2.0/subnetpools", params={"shared": "true"}).json()["subnetpools"]
    assert shared["id"] in [p["id"] for p in filtered]
    assert all(p["shared"] for p in filtered)


def test_default_pool_and_use_default_subnetpool(api, tenant, cli):
    a = tenant()
    expect_error(
        a.post("/v2.0/subnetpools", {"subnetpool": {"prefixes": ["10.90.0.0/16"], "is_default": True}}),
        403,
        None,
    )
    net = a.network()
    err = expect_error(
        a.post(
            "/v2.0/subnets",
            {"subnet": {"network_id": net["id"], "ip_version": 4, "use_default_subnetpool": True}},
        ),
        400,
        "BadRequest",
    )
    assert "No default subnetpool found for IPv4" in err["message"]
    pool = _pool(api, ["10.90.0.0/16"], default_prefixlen=24, shared=True, is_default=True)
    try:
        again = api.post(
            "/v2.0/subnetpools",
            {"subnetpool": {"prefixes": ["10.91.0.0/16"], "is_default": True}},
        )
        expect_error(again, 400, "InvalidInput")
        s = expect(
            a.post(
                "/v2.0/subnets",
                {"subnet": {"network_id": net["id"], "ip_version": 4, "use_default_subnetpool": True}},
            ),
            201,
        )["subnet"]
        assert (s["subnetpool_id"], s["cidr"]) == (pool["id"], "10.90.0.0/24")
        both = a.post(
            "/v2.0/subnets",
            {"subnet": {"network_id": net["id"], "ip_version": 4,
                        "use_default_subnetpool": True, "subnetpool_id": pool["id"]}},
        )
        expect_error(both, 400, "BadRequest")
        # The CLI's --use-default-subnet-pool.
        cli_net = cli.json("network", "create", uniq("N"))
        made = cli.json(
            "subnet", "create", "--use-default-subnet-pool", "--prefix-length", "28",
            "--network", cli_net["id"], uniq("S"),
        )
        assert made["subnetpool_id"] == pool["id"] and made["cidr"].endswith("/28")
        assert [p["id"] for p in api.list("subnetpools", {"is_default": "true"})] == [pool["id"]]
    finally:
        api.put(f"/v2.0/subnetpools/{pool['id']}", {"subnetpool": {"is_default": False}})
    assert api.show("subnetpools", pool["id"])["is_default"] is False


def test_sdk_and_tags(sdk, api):
    conn = sdk()
    name = uniq("sdk-pool")
    pool = conn.network.create_subnet_pool(
        name=name, prefixes=["10.100.0.0/16"], default_prefix_length=24, default_quota=512,
    )
    assert pool.ip_version == 4 and pool.default_quota == 512
    assert conn.network.find_subnet_pool(name).id == pool.id
    net = conn.network.create_network(name=uniq("sdk-net"))
    subnets = [
        conn.network.create_subnet(network_id=net.id, ip_version=4, subnet_pool_id=pool.id)
        for _ in range(2)
    ]
    assert [s.cidr for s in subnets] == ["10.100.0.0/24", "10.100.1.0/24"]
    assert all(s.subnet_pool_id == pool.id for s in subnets)
    # default_quota 512 addresses: two /24s are all of it.
    over = _from_pool(api, net.id, pool.id, prefixlen=28)
    expect_error(over, 409, "SubnetPoolQuotaExceeded")

    pool = conn.network.update_subnet_pool(pool, name=name + "-2", maximum_prefix_length=28)
    assert pool.maximum_prefix_length == 28
    conn.network.set_tags(pool, ["blue", "red"])
    assert sorted(conn.network.get_subnet_pool(pool.id).tags) == ["blue", "red"]
    assert expect(api.put(f"/v2.0/subnetpools/{pool.id}/tags/green"), 201) is None
    tagged = api.list("subnetpools", {"tags": "green"})
    assert [p["id"] for p in tagged] == [pool.id]
    expect(api.delete(f"/v2.0/subnetpools/{pool.id}/tags/green"), 204)
    assert api.show("subnetpools", pool.id)["tags"] == ["blue", "red"]

    for s in subnets:
        conn.network.delete_subnet(s)
    conn.network.delete_subnet_pool(pool)
    assert conn.network.find_subnet_pool(pool.id) is None


def test_subnetpool_quota_and_extensions(api, tenant):
    a = tenant()
    aliases = [e["alias"] for e in api.get("/v2.0/extensions").json()["extensions"]]
    for alias in ("subnet_allocation", "default-subnetpools", "subnetpool-prefix-ops"):
        assert alias in aliases
    assert aliases == sorted(aliases)
    assert {"name": "subnetpool", "collection": "subnetpools"}.items() <= next(
        r for r in api.get("/v2.0").json()["resources"] if r["name"] == "subnetpool"
    ).items()
    assert api.get(f"/v2.0/quotas/{a.project}").json()["quota"]["subnetpool"] == -1
    expect(api.put(f"/v2.0/quotas/{a.project}", {"quota": {"subnetpool": 1}}), 200)
    _pool(a, ["10.110.0.0/16"])
    expect_error(
        a.post("/v2.0/subnetpools", {"subnetpool": {"prefixes": ["10.111.0.0/16"]}}), 409, "OverQuota"
    )


def test_allocations_survive_a_restart(fresh_server):
    api = fresh_server.api()
    pool = _pool(api, ["10.120.0.0/23"], default_prefixlen=24)
    net = api.network()
    first = expect(_from_pool(api, net["id"], pool["id"]), 201)["subnet"]
    fresh_server.kill9()
    fresh_server.start()
    api = fresh_server.api()
    assert api.show("subnetpools", pool["id"])["prefixes"] == ["10.120.0.0/23"]
    assert api.show("subnets", first["id"])["subnetpool_id"] == pool["id"]
    second = expect(_from_pool(api, net["id"], pool["id"]), 201)["subnet"]
    assert second["cidr"] == "10.120.1.0/24"
    expect_error(_from_pool(api, net["id"], pool["id"]), 409, "SubnetAllocationError")
    expect_error(api.delete(f"/v2.0/subnetpools/{pool['id']}"), 400, "SubnetPoolDeleteError")
