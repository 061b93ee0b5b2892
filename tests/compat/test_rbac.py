"""RBAC policies (`rbac-policies`, `rbac-security-groups`, `rbac-subnetpool`)
with the `openstack` CLI, openstacksdk and raw HTTP, across two tenants.

Neutron's behaviour, from neutron/db/rbac_db_mixin.py, neutron/objects/
rbac_db.py, neutron/db/external_net_db.py and neutron/conf/policies/rbac.py:
a target project sees (and uses) the object as if shared, never the policy;
`shared: true` is the wildcard `access_as_shared` policy; only the object's
owner or an admin makes policies on it, only an admin for `*`; a policy a
project's ports, gateways or subnets still need is `RbacPolicyInUse`.
`target_tenant` must look like a Keystone project id (a UUID) or be `*`, so
the raw-HTTP tenants here have such ids.
"""

from __future__ import annotations

import uuid

from helpers import expect, expect_error, uniq
from test_keystone import PasswordCli


def _project():
    return uuid.uuid4().hex


def _policy(api, object_id, target, object_type="network", action="access_as_shared"):
    body = {"object_type": object_type, "object_id": object_id, "action": action,
            "target_tenant": target}  # fmt: skip
    return api.post("/v2.0/rbac-policies", {"rbac_policy": body})


def test_cli_shares_a_network_with_one_project_then_all(keystone_cloud):
    c = keystone_cloud
    alice, bob, admin = (PasswordCli(c, who) for who in ("alice", "bob", "admin"))
    proj_a, proj_b = c.projects["proj-a"], c.projects["proj-b"]
    name = uniq("net")
    net = alice.json("network", "create", name)
    alice.ok("subnet", "create", "--network", name, "--subnet-range", "10.77.0.0/24", uniq("s"))
    assert bob.fails("network", "show", net["id"]).returncode != 0

    pol = alice.json(
        "network", "rbac", "create", "--type", "network", "--action", "access_as_shared",
        "--target-project", proj_b, name,
    )  # fmt: skip
    assert pol["object_id"] == net["id"] and pol["target_project_id"] == proj_b
    assert pol["project_id"] == proj_a
    shown = bob.json("network", "show", net["id"])
    assert shown["shared"] is True
    # The owner's own view: shared with b is not shared with everyone.
    assert alice.json("network", "show", name)["shared"] is False
    port = bob.json("port", "create", "--network", net["id"], uniq("p"))
    assert port["project_id"] == proj_b
    # The target sees the network, never the policy.
    assert pol["id"] in [p["ID"] for p in alice.json("network", "rbac", "list")]
    assert pol["id"] not in [p["ID"] for p in bob.json("network", "rbac", "list")]
    assert bob.fails("network", "rbac", "show", pol["id"]).returncode != 0

    res = alice.fails("network", "rbac", "delete", pol["id"])
    assert "cannot be removed because other objects depend on it" in res.stderr
    res = alice.fails("network", "rbac", "set", "--target-project", c.projects["admin"], pol["id"])
    assert "depend on it" in res.stderr
    bob.ok("port", "delete", port["id"])
    alice.ok("network", "rbac", "set", "--target-project", c.projects["admin"], pol["id"])
    moved = alice.json("network", "rbac", "show", pol["id"])
    assert moved["target_project_id"] == c.projects["admin"]
    assert bob.fails("network", "show", net["id"]).returncode != 0

    # Everyone: an admin's to grant; then every project sees it shared.
    res = alice.fails(
        "network", "rbac", "create", "--type", "network", "--action", "access_as_shared",
        "--target-all-projects", name,
    )  # fmt: skip
    assert "disallowed by policy" in res.stderr
    wildcard = admin.json(
        "network", "rbac", "create", "--type", "network", "--action", "access_as_shared",
        "--target-all-projects", net["id"],
    )  # fmt: skip
    assert wildcard["target_project_id"] == "*"
    assert bob.json("network", "show", net["id"])["shared"] is True
    assert alice.json("network", "show", name)["shared"] is True
    admin.ok("network", "rbac", "delete", wildcard["id"])
    assert alice.json("network", "show", name)["shared"] is False
    alice.ok("network", "rbac", "delete", pol["id"])
    alice.ok("network", "delete", name)


def test_shared_is_the_wildcard_policy(api, tenant):
    owner = _project()
    net = api.network(project_id=owner, shared=True)
    listed = api.list("rbac-policies", {"object_id": net["id"]})
    assert len(listed) == 1
    wildcard = listed[0]
    assert wildcard == {
        "id": wildcard["id"], "project_id": owner, "tenant_id": owner,
        "object_type": "network", "object_id": net["id"], "action": "access_as_shared",
        "target_tenant": "*", "target_project": "*",
    }  # fmt: skip
    other = tenant(_project())
    assert other.show("networks", net["id"])["shared"] is True
    expect(api.delete(f"/v2.0/rbac-policies/{wildcard['id']}"), 204)
    assert api.show("networks", net["id"])["shared"] is False
    expect_error(other.get(f"/v2.0/networks/{net['id']}"), 404, "NetworkNotFound")
    made = expect(_policy(api, net["id"], "*"), 201)["rbac_policy"]
    assert other.show("networks", net["id"])["shared"] is True
    assert net["id"] in [n["id"] for n in api.list("networks", {"shared": "true"})]
    api.update("networks", net["id"], shared=False)
    expect_error(api.get(f"/v2.0/rbac-policies/{made['id']}"), 404, "RbacPolicyNotFound")
    api.update("networks", net["id"], shared=True)
    api.update("networks", net["id"], shared=True)
    assert len(api.list("rbac-policies", {"object_id": net["id"]})) == 1
    api.remove("networks", net["id"])
    assert api.list("rbac-policies", {"object_id": net["id"]}) == []


def test_errors_have_neutrons_shapes_and_change_nothing(api, tenant):
    a, b = tenant(_project()), tenant(_project())
    net = a.network()
    a.subnet(net["id"], "10.78.0.0/24")
    # b cannot see a's network; nor share it once it can.
    expect_error(_policy(b, net["id"], b.project), 404, "NetworkNotFound")
    pol = expect(_policy(a, net["id"], b.project), 201)["rbac_policy"]
    err = expect_error(_policy(b, net["id"], _project()), 400, "InvalidInput")
    assert "do not own" in err["message"]
    expect_error(_policy(a, net["id"], b.project), 409, "DuplicateRbacPolicy")
    expect_error(_policy(a, net["id"], "*"), 403, "PolicyNotAuthorized")
    err = expect_error(_policy(a, net["id"], "proj-b"), 400, "HTTPBadRequest")
    assert "not a valid target project ID" in err["message"]
    expect_error(_policy(a, net["id"], None), 400, None)
    err = expect_error(_policy(a, net["id"], b.project, "address_scope"), 400, "InvalidInput")
    assert err["message"] == (
        "Invalid input for operation: 'address_scope' is not a valid RBAC object type."
    )
    err = expect_error(
        _policy(a, net["id"], _project(), action="access_as_owner"), 400, "InvalidActionForType"
    )
    assert "('access_as_shared', 'access_as_external')" in err["message"]
    expect_error(_policy(a, "not-a-uuid", b.project), 400, None)
    # Only target_tenant changes, and only to a project (for a non-admin).
    path = f"/v2.0/rbac-policies/{pol['id']}"
    expect_error(a.put(path, {"rbac_policy": {"action": "access_as_external"}}), 400, None)
    expect_error(a.put(path, {"rbac_policy": {"target_tenant": "*"}}), 403, "PolicyNotAuthorized")
    expect_error(b.get(path), 404, "RbacPolicyNotFound")
    expect_error(b.delete(path), 404, "RbacPolicyNotFound")
    expect_error(a.get(f"{path}/tags"), 404, None)

    port = b.port(net["id"])
    err = expect_error(a.delete(path), 409, "RbacPolicyInUse")
    assert err["message"].startswith(f"RBAC policy on object {net['id']} cannot be removed")
    expect_error(a.put(path, {"rbac_policy": {"target_tenant": _project()}}), 409, "RbacPolicyInUse")
    assert a.show("rbac-policies", pol["id"]) == pol
    assert b.show("ports", port["id"])["network_id"] == net["id"]
    b.remove("ports", port["id"])
    expect(a.delete(path), 204)
    expect_error(b.get(f"/v2.0/networks/{net['id']}"), 404, "NetworkNotFound")


def test_list_filters_fields_and_pages(api, tenant):
    a = tenant(_project())
    net = a.network()
    targets = sorted(_project() for _ in range(4))
    made = [expect(_policy(a, net["id"], t), 201)["rbac_policy"] for t in targets]
    listed = a.list("rbac-policies")
    assert sorted(p["id"] for p in listed) == sorted(p["id"] for p in made)
    only = a.list("rbac-policies", {"target_tenant": targets[2]})
    assert [p["id"] for p in only] == [made[2]["id"]]
    assert a.list("rbac-policies", {"object_type": "security_group"}) == []
    fields = a.list("rbac-policies", {"fields": ["id", "action"]})
    assert all(set(p) == {"id", "action"} for p in fields)
    page = a.get("/v2.0/rbac-policies", params={"limit": 2, "sort_key": "target_tenant"}).json()
    assert [p["target_tenant"] for p in page["rbac_policies"]] == targets[:2]
    nxt = [link for link in page["rbac_policies_links"] if link["rel"] == "next"]
    rest = a.get(nxt[0]["href"]).json()["rbac_policies"]
    assert [p["target_tenant"] for p in rest] == targets[2:4]
    # An admin sees every project's policies.
    assert made[0]["id"] in [p["id"] for p in api.list("rbac-policies")]


def test_sdk_shares_a_security_group_and_a_subnet_pool(sdk, tenant):
    a, b = tenant(_project()), tenant(_project())
    conn_a = sdk(project=a.project, roles="member")
    group = conn_a.network.create_security_group(name=uniq("sg"))
    pool = conn_a.network.create_subnet_pool(
        name=uniq("pool"), prefixes=["10.79.0.0/16"], default_prefix_length=24
    )
    net = b.network()
    b.subnet(net["id"], "10.80.0.0/24")
    with_group = {"port": {"network_id": net["id"], "security_groups": [group.id]}}
    expect_error(b.post("/v2.0/ports", with_group), 404, "SecurityGroupNotFound")

    sg_pol = conn_a.network.create_rbac_policy(
        object_type="security_group", object_id=group.id, action="access_as_shared",
        target_project_id=b.project,
    )  # fmt: skip
    assert sg_pol.target_project_id == b.project
    assert b.show("security-groups", group.id)["shared"] is True
    assert a.show("security-groups", group.id)["shared"] is False
    # security-groups-shared-filtering
    assert [g["id"] for g in b.list("security-groups", {"shared": "true"})] == [group.id]
    assert group.id not in {g["id"] for g in b.list("security-groups", {"shared": "false"})}
    port = expect(b.post("/v2.0/ports", with_group), 201)["port"]
    mine = b.security_group()
    rule = {"security_group_id": mine["id"], "direction": "ingress", "remote_group_id": group.id}
    expect(b.post("/v2.0/security-group-rules", {"security_group_rule": rule}), 201)
    expect_error(a.delete(f"/v2.0/rbac-policies/{sg_pol.id}"), 409, "RbacPolicyInUse")
    b.remove("ports", port["id"])
    conn_a.network.delete_rbac_policy(sg_pol.id)
    expect_error(b.get(f"/v2.0/security-groups/{group.id}"), 404, "SecurityGroupNotFound")

    other = b.network()
    from_pool = {"subnet": {"network_id": other["id"], "ip_version": 4, "subnetpool_id": pool.id}}
    expect_error(b.post("/v2.0/subnets", from_pool), 404, "SubnetPoolNotFound")
    pool_pol = conn_a.network.create_rbac_policy(
        object_type="subnetpool", object_id=pool.id, action="access_as_shared",
        target_project_id=b.project,
    )  # fmt: skip
    assert b.show("subnetpools", pool.id)["shared"] is True
    assert a.show("subnetpools", pool.id)["shared"] is False
    subnet = expect(b.post("/v2.0/subnets", from_pool), 201)["subnet"]
    assert subnet["cidr"] == "10.79.0.0/24" and subnet["project_id"] == b.project
    expect_error(a.delete(f"/v2.0/rbac-policies/{pool_pol.id}"), 409, "RbacPolicyInUse")
    b.remove("subnets", subnet["id"])
    conn_a.network.delete_rbac_policy(pool_pol.id)
    expect_error(b.get(f"/v2.0/subnetpools/{pool.id}"), 404, "SubnetPoolNotFound")


def test_access_as_external_gives_one_project_gateways(api, tenant):
    b, c = tenant(_project()), tenant(_project())
    ext = api.network()
    api.subnet(ext["id"], "198.51.100.0/24")
    pol = expect(_policy(api, ext["id"], b.project, action="access_as_external"), 201)
    pol = pol["rbac_policy"]
    assert api.show("networks", ext["id"])["router:external"] is True
    seen = b.show("networks", ext["id"])
    assert seen["router:external"] is True and seen["shared"] is False
    expect_error(c.get(f"/v2.0/networks/{ext['id']}"), 404, "NetworkNotFound")
    # External is not shared: no ports of b's own on it.
    expect_error(b.post("/v2.0/ports", {"port": {"network_id": ext["id"]}}), 403, None)
    gw = {"external_gateway_info": {"network_id": ext["id"]}}
    expect_error(c.post("/v2.0/routers", {"router": gw}), 404, "NetworkNotFound")
    router = expect(b.post("/v2.0/routers", {"router": gw}), 201)["router"]
    path = f"/v2.0/rbac-policies/{pol['id']}"
    err = expect_error(api.delete(path), 409, "RbacPolicyInUse")
    assert "routers attached to this network" in err["message"]
    b.remove("routers", router["id"])
    expect(api.delete(path), 204)
    # Its last external policy gone, the network is an ordinary one.
    assert api.show("networks", ext["id"])["router:external"] is False
    expect_error(b.get(f"/v2.0/networks/{ext['id']}"), 404, "NetworkNotFound")
