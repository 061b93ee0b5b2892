"""Metering labels and rules (`metering`, `metering_source_and_destination_fields`)
with the real `openstack` CLI, checked over raw HTTP: admin only, Neutron's
shapes and refusals. The counting itself is the e2e test's
(crates/vnet/tests/e2e_metering.rs)."""

from __future__ import annotations

from helpers import expect, expect_error, uniq

LABELS = "/v2.0/metering/metering-labels"
RULES = "/v2.0/metering/metering-label-rules"


def _row(rows, rid):
    found = [r for r in rows if r.get("ID") == rid]
    assert len(found) == 1, f"{rid} listed {len(found)} times in {rows}"
    return found[0]


def test_extensions_listed(api):
    aliases = [e["alias"] for e in expect(api.get("/v2.0/extensions"), 200)["extensions"]]
    assert "metering" in aliases
    assert "metering_source_and_destination_fields" in aliases
    assert aliases == sorted(aliases)


def test_meter_and_rules_with_the_cli(cli, api):
    name = uniq("meter")
    label = cli.json("network", "meter", "create", "--description", "billing", name)
    assert label["name"] == name and label["description"] == "billing"
    assert label["shared"] is False
    shown = expect(api.get(f"{LABELS}/{label['id']}"), 200)["metering_label"]
    # As Neutron renders a label: no tags, timestamps or revision.
    assert set(shown) == {"id", "name", "description", "shared", "project_id", "tenant_id"}
    assert shown["project_id"] == shown["tenant_id"]
    assert _row(cli.json("network", "meter", "list"), label["id"])["Name"] == name
    assert cli.json("network", "meter", "show", name)["id"] == label["id"]

    rule = cli.json(
        "network", "meter", "rule", "create",
        "--remote-ip-prefix", "10.0.0.0/24", "--ingress", label["id"],
    )
    assert rule["direction"] == "ingress"
    shown = expect(api.get(f"{RULES}/{rule['id']}"), 200)["metering_label_rule"]
    assert shown == {
        "id": rule["id"], "metering_label_id": label["id"], "direction": "ingress",
        "excluded": False, "remote_ip_prefix": "10.0.0.0/24",
        "source_ip_prefix": None, "destination_ip_prefix": None,
    }
    excluded = cli.json(
        "network", "meter", "rule", "create", "--exclude",
        "--remote-ip-prefix", "10.0.0.5/32", "--egress", label["id"],
    )
    shown = expect(api.get(f"{RULES}/{excluded['id']}"), 200)["metering_label_rule"]
    assert shown["excluded"] is True and shown["direction"] == "egress"
    rows = cli.json("network", "meter", "rule", "list")
    assert _row(rows, rule["id"]) and _row(rows, excluded["id"])
    assert cli.json("network", "meter", "rule", "show", rule["id"])["remote_ip_prefix"] == "10.0.0.0/24"

    # Overlapping the first rule (same direction, not excluded): 409.
    err = expect_error(
        api.post(RULES, {"metering_label_rule": {
            "metering_label_id": label["id"], "direction": "ingress",
            "remote_ip_prefix": "10.0.0.128/25"}}),
        409, "MeteringLabelRuleOverlaps",
    )
    assert "10.0.0.128/25" in err["message"]
    assert cli.fails("network", "meter", "rule", "create", "--remote-ip-prefix",
                     "10.0.0.0/16", "--ingress", label["id"]).returncode != 0

    cli.ok("network", "meter", "rule", "delete", excluded["id"])
    expect_error(api.get(f"{RULES}/{excluded['id']}"), 404, "MeteringLabelRuleNotFound")
    # Deleting the label deletes its rules.
    cli.ok("network", "meter", "delete", label["id"])
    expect_error(api.get(f"{LABELS}/{label['id']}"), 404, "MeteringLabelNotFound")
    expect_error(api.get(f"{RULES}/{rule['id']}"), 404, "MeteringLabelRuleNotFound")


def test_shared_label_and_source_destination_prefixes(cli, api):
    label = cli.json("network", "meter", "create", "--share", uniq("meter"))
    assert label["shared"] is True
    rule = expect(api.post(RULES, {"metering_label_rule": {
        "metering_label_id": label["id"], "direction": "egress",
        "source_ip_prefix": "10.1.0.0/24", "destination_ip_prefix": "203.0.113.1/32"}}), 201
    )["metering_label_rule"]
    assert rule["remote_ip_prefix"] is None
    assert (rule["source_ip_prefix"], rule["destination_ip_prefix"]) == (
        "10.1.0.0/24", "203.0.113.1/32")
    filtered = expect(api.get(RULES, params={"metering_label_id": label["id"]}), 200)
    assert [r["id"] for r in filtered["metering_label_rules"]] == [rule["id"]]
    api.delete(f"{LABELS}/{label['id']}")


def test_bad_rules_change_nothing(api):
    label = expect(api.post(LABELS, {"metering_label": {"name": uniq("m")}}), 201)["metering_label"]
    before = expect(api.get(RULES), 200)["metering_label_rules"]
    cases = [
        # No prefix at all.
        ({"direction": "ingress"}, 400),
        # remote with source: refused.
        ({"direction": "ingress", "remote_ip_prefix": "10.0.0.0/8",
          "source_ip_prefix": "10.0.0.0/8"}, 400),
        ({"direction": "ingress", "remote_ip_prefix": "not-an-ip"}, 400),
        ({"direction": "sideways", "remote_ip_prefix": "10.0.0.0/8"}, 400),
        ({"remote_ip_prefix": "10.0.0.0/8"}, 400),
    ]
    for attrs, status in cases:
        body = {"metering_label_rule": {"metering_label_id": label["id"], **attrs}}
        expect_error(api.post(RULES, body), status, None)
    # A label that does not exist: 404; not a UUID: 400.
    missing = "0b0e5c3e-1111-4222-8333-444455556666"
    expect_error(api.post(RULES, {"metering_label_rule": {
        "metering_label_id": missing, "direction": "ingress",
        "remote_ip_prefix": "10.0.0.0/8"}}), 404, "MeteringLabelNotFound")
    expect_error(api.post(RULES, {"metering_label_rule": {
        "metering_label_id": "nope", "direction": "ingress",
        "remote_ip_prefix": "10.0.0.0/8"}}), 400, None)
    assert expect(api.get(RULES), 200)["metering_label_rules"] == before
    # Neither labels nor rules are updatable.
    expect_error(api.put(f"{LABELS}/{label['id']}", {"metering_label": {"name": "x"}}),
                 405, "HTTPMethodNotAllowed")
    # No tags either (no standard attributes).
    expect_error(api.put(f"{LABELS}/{label['id']}/tags/red"), 404, None)
    api.delete(f"{LABELS}/{label['id']}")


def test_a_member_never_sees_labels(cli, api, tenant):
    label = expect(api.post(LABELS, {"metering_label": {"name": uniq("m"), "shared": True}}),
                   201)["metering_label"]
    rule = expect(api.post(RULES, {"metering_label_rule": {
        "metering_label_id": label["id"], "direction": "egress",
        "remote_ip_prefix": "0.0.0.0/0"}}), 201)["metering_label_rule"]
    member = tenant()
    # Even a label of its own project.
    own = expect(api.post(LABELS, {"metering_label": {
        "name": uniq("m"), "project_id": member.project}}), 201)["metering_label"]
    assert expect(member.get(LABELS), 200)["metering_labels"] == []
    assert expect(member.get(RULES), 200)["metering_label_rules"] == []
    expect_error(member.get(f"{LABELS}/{label['id']}"), 404, "MeteringLabelNotFound")
    expect_error(member.get(f"{LABELS}/{own['id']}"), 404, "MeteringLabelNotFound")
    expect_error(member.get(f"{RULES}/{rule['id']}"), 404, "MeteringLabelRuleNotFound")
    expect_error(member.post(LABELS, {"metering_label": {"name": "mine"}}),
                 403, "PolicyNotAuthorized")
    expect_error(member.post(RULES, {"metering_label_rule": {
        "metering_label_id": own["id"], "direction": "egress",
        "remote_ip_prefix": "10.0.0.0/8"}}), 403, "PolicyNotAuthorized")
    expect_error(member.delete(f"{LABELS}/{label['id']}"), 404, "MeteringLabelNotFound")
    expect_error(member.delete(f"{RULES}/{rule['id']}"), 404, "MeteringLabelRuleNotFound")
    # Still there for the admin.
    expect(api.get(f"{RULES}/{rule['id']}"), 200)
    for lid in (label["id"], own["id"]):
        api.delete(f"{LABELS}/{lid}")
