"""The templates of new security groups' rules (Neutron's
security-groups-default-rules), with the real `openstack` CLI: Neutron's
legacy templates in a new cloud, admins adding and removing templates, and
new groups taking the templates for their kind."""

from __future__ import annotations

from helpers import Api, Cli, expect, expect_error, uniq

LEGACY = [
    # (direction, ethertype, remote_group_id, used_in_default_sg, used_in_non_default_sg)
    ("egress", "IPv4", None, True, True),
    ("egress", "IPv6", None, True, True),
    ("ingress", "IPv4", "PARENT", True, False),
    ("ingress", "IPv6", "PARENT", True, False),
]


def _shape(t: dict) -> tuple:
    return (t["direction"], t["ethertype"], t["remote_group_id"],
            t["used_in_default_sg"], t["used_in_non_default_sg"])


def _rules(api: Api, group: dict) -> set[tuple]:
    rules = api.list("security-group-rules", {"security_group_id": group["id"]})
    return {(r["direction"], r["ethertype"], r["protocol"], r["port_range_min"],
             r["remote_group_id"]) for r in rules}


def test_a_new_cloud_has_neutrons_legacy_templates(fresh_server):
    api = Api(fresh_server.url)
    templates = expect(api.get("/v2.0/default-security-group-rules"), 200)[
        "default_security_group_rules"]
    assert sorted(_shape(t) for t in templates) == sorted(LEGACY)
    assert set(templates[0]) == {
        "id", "description", "direction", "ethertype", "protocol", "port_range_min",
        "port_range_max", "remote_ip_prefix", "remote_group_id", "remote_address_group_id",
        "used_in_default_sg", "used_in_non_default_sg"}
    # What they give: the default group takes its members' traffic, every
    # group may send anything.
    t = fresh_server.api(project=uniq("p"), roles="member")
    default = t.list("security-groups")[0]
    assert _rules(t, default) == {
        ("egress", "IPv4", None, None, None), ("egress", "IPv6", None, None, None),
        ("ingress", "IPv4", None, None, default["id"]),
        ("ingress", "IPv6", None, None, default["id"])}
    custom = t.security_group()
    assert _rules(t, custom) == {("egress", "IPv4", None, None, None),
                                 ("egress", "IPv6", None, None, None)}

    # Seeded once: a template an admin deleted stays deleted after a restart.
    gone = next(t for t in templates if _shape(t) == LEGACY[1])
    expect(api.delete(f"/v2.0/default-security-group-rules/{gone['id']}"), 204)
    fresh_server.restart()
    after = Api(fresh_server.url).list("default-security-group-rules")
    assert sorted(_shape(t) for t in after) == sorted(s for s in LEGACY if s != LEGACY[1])


def test_admins_shape_what_new_groups_get(server, api, tenant):
    cli = Cli(server.url)
    ssh = cli.json("default", "security", "group", "rule", "create", "--ingress",
                   "--protocol", "tcp", "--dst-port", "22", "--for-custom-sg",
                   "--description", uniq("ssh"))
    try:
        assert ssh["used_in_non_default_sg"] is True and ssh["used_in_default_sg"] is False
        shown = cli.json("default", "security", "group", "rule", "show", ssh["id"])
        assert shown["port_range_min"] == 22 and shown["protocol"] == "tcp"
        assert ssh["id"] in {r["ID"] for r in cli.json("default", "security", "group", "rule", "list")}

        t = tenant()
        custom = t.security_group()
        assert ("ingress", "IPv4", "tcp", 22, None) in _rules(t, custom)
        default = next(g for g in t.list("security-groups") if g["name"] == "default")
        assert ("ingress", "IPv4", "tcp", 22, None) not in _rules(t, default)

        # The same template for the same kind of group is one too many; for
        # the other kind it is another template.
        body = {"default_security_group_rule": {
            "direction": "ingress", "protocol": "tcp", "port_range_min": 22,
            "port_range_max": 22, "remote_ip_prefix": "0.0.0.0/0", "used_in_non_default_sg": True}}
        expect_error(api.post("/v2.0/default-security-group-rules", body), 409,
                     "DefaultSecurityGroupRuleExists")
        # Members read templates but do not make or remove them; none is updatable.
        member = tenant()
        assert ssh["id"] in {r["id"] for r in member.list("default-security-group-rules")}
        expect_error(member.post("/v2.0/default-security-group-rules", body), 403,
                     "PolicyNotAuthorized")
        expect_error(member.delete(f"/v2.0/default-security-group-rules/{ssh['id']}"), 403,
                     "PolicyNotAuthorized")
        expect_error(api.put(f"/v2.0/default-security-group-rules/{ssh['id']}",
                             {"default_security_group_rule": {"description": "x"}}), 405, None)
        bad = {"default_security_group_rule": {"direction": "ingress", "remote_group_id": uniq("g")}}
        expect_error(api.post("/v2.0/default-security-group-rules", bad), 400, "InvalidInput")
    finally:
        cli.ok("default", "security", "group", "rule", "delete", ssh["id"])
    assert ("ingress", "IPv4", "tcp", 22, None) not in _rules(t, t.security_group())
    expect_error(api.get(f"/v2.0/default-security-group-rules/{ssh['id']}"), 404,
                 "DefaultSecurityGroupRuleNotFound")
