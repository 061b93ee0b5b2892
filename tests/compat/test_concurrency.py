"""Concurrent clients: IPAM never hands out an address twice, an exhausted
pool answers 409 IpAddressGenerationFailure cleanly, and first use of a
project creates exactly one default security group."""

from __future__ import annotations

import threading
from collections import Counter

import requests

from helpers import describe, expect, expect_error, ips_of, uniq

CLIENTS = 8


def run_clients(n, work, timeout=120):
    """Run work(k, session) in n threads started together; return their results."""
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list = []

    def main(k):
        try:
            s = requests.Session()
            barrier.wait(timeout=30)
            results[k] = work(k, s)
        except Exception as e:  # reported below, with the thread's index
            errors.append(f"client {k}: {e!r}")

    threads = [threading.Thread(target=main, args=(k,), daemon=True) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
        assert not t.is_alive(), "a client thread hung"
    assert not errors, errors
    return results


def test_small_subnet_exhaustion(server):
    api = server.api()
    # /28: .0 network, .1 gateway, .15 broadcast -> 13 addresses, .2 to .14
    net, sub = api.network_with_subnet("10.210.0.0/28")
    pool = {f"10.210.0.{i}" for i in range(2, 15)}
    assert sub["allocation_pools"] == [{"start": "10.210.0.2", "end": "10.210.0.14"}]
    attempts_each = 4  # 32 attempts for 13 addresses

    def work(k, s):
        out = []
        for _ in range(attempts_each):
            r = s.post(f"{server.url}/v2.0/ports", json={"port": {"network_id": net["id"]}}, timeout=60)
            out.append(r)
        return out

    responses = [r for rs in run_clients(CLIENTS, work) for r in rs]
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}, [describe(r) for r in responses if r.status_code not in (201, 409)]
    created = [r.json()["port"] for r in responses if r.status_code == 201]
    assert len(created) == len(pool), f"{len(created)} ports created for a pool of {len(pool)}"
    ips = [ip for p in created for ip in ips_of(p)]
    assert sorted(ips) == sorted(pool), "duplicate or out-of-pool addresses"
    for r in responses:
        if r.status_code == 409:
            expect_error(r, 409, "IpAddressGenerationFailure")

    # The store agrees, and nothing else was left behind.
    listed = api.list("ports", {"network_id": net["id"]})
    assert sorted(p["id"] for p in listed) == sorted(p["id"] for p in created)
    assert sorted(ip for p in listed for ip in ips_of(p)) == sorted(pool)
    # Freeing one address makes exactly that one available again.
    victim = created[0]
    api.remove("ports", victim["id"])
    assert ips_of(api.port(net["id"])) == ips_of(victim)
    expect_error(api.post("/v2.0/ports", {"port": {"network_id": net["id"]}}), 409, "IpAddressGenerationFailure")


def test_same_fixed_ip_race(server):
    api = server.api()
    net, sub = api.network_with_subnet("10.211.0.0/24")
    body = {"port": {"network_id": net["id"], "fixed_ips": [{"subnet_id": sub["id"], "ip_address": "10.211.0.5"}]}}

    def work(k, s):
        return s.post(f"{server.url}/v2.0/ports", json=body, timeout=60)

    responses = run_clients(CLIENTS, work)
    assert sorted(r.status_code for r in responses) == [201] + [409] * (CLIENTS - 1), [
        describe(r) for r in responses
    ]
    for r in responses:
        if r.status_code == 409:
            expect_error(r, 409, "IpAddressAlreadyAllocated")
    assert len(api.list("ports", {"network_id": net["id"]})) == 1


def test_many_clients_distinct_addresses(server):
    api = server.api()
    net, _ = api.network_with_subnet("10.212.0.0/24")
    per_client = 20

    def work(k, s):
        out = []
        for i in range(per_client):
            r = s.post(
                f"{server.url}/v2.0/ports",
                json={"port": {"network_id": net["id"], "name": f"c{k}-{i}"}},
                timeout=60,
            )
            out.append(expect(r, 201)["port"])
        return out

    created = [p for ps in run_clients(CLIENTS, work) for p in ps]
    ips = [ips_of(p)[0] for p in created]
    macs = [p["mac_address"] for p in created]
    assert len(set(ips)) == len(ips) == CLIENTS * per_client
    assert len(set(macs)) == len(macs)
    listed = api.list("ports", {"network_id": net["id"]})
    assert sorted(ips_of(p)[0] for p in listed) == sorted(ips)


def test_concurrent_create_and_delete_release_addresses(server):
    api = server.api()
    net, _ = api.network_with_subnet("10.213.0.0/28")  # 13 addresses, 8 clients
    loops = 10

    def work(k, s):
        for _ in range(loops):
            r = s.post(f"{server.url}/v2.0/ports", json={"port": {"network_id": net["id"]}}, timeout=60)
            port = expect(r, 201)["port"]
            expect(s.delete(f"{server.url}/v2.0/ports/{port['id']}", timeout=60), 204)

    run_clients(CLIENTS, work)
    assert api.list("ports", {"network_id": net["id"]}) == []
    # Every address came back: the whole pool can be allocated again.
    got = {ips_of(api.port(net["id"]))[0] for _ in range(13)}
    assert len(got) == 13
    expect_error(api.post("/v2.0/ports", {"port": {"network_id": net["id"]}}), 409, "IpAddressGenerationFailure")


def test_first_requests_of_a_project_make_one_default_group(server):
    project = uniq("proj")
    headers = {"X-Project-Id": project, "X-Roles": "member"}

    def work(k, s):
        if k % 2:
            r = s.get(f"{server.url}/v2.0/security-groups", headers=headers, timeout=60)
            return expect(r, 200)
        r = s.post(f"{server.url}/v2.0/networks", json={"network": {"name": f"n{k}"}}, headers=headers, timeout=60)
        return expect(r, 201)

    results = run_clients(CLIENTS, work)
    t = server.api(project=project, roles="member")
    groups = t.list("security-groups")
    assert [g["name"] for g in groups] == ["default"], groups
    for k in range(1, CLIENTS, 2):  # every concurrent first list saw that one group
        assert [g["id"] for g in results[k]["security_groups"]] == [groups[0]["id"]]
    assert len(groups[0]["security_group_rules"]) == 4
    assert len(t.list_own("networks")) == CLIENTS // 2
