"""vnet behind a real Keystone (`vnet server --auth keystone`).

The clients authenticate with passwords and find vnet in Keystone's catalog,
as they find Neutron; vnet validates each token with Keystone, takes the
project and roles from it, and caches the answer. See conftest.py for the
users and projects.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from helpers import Cli, CliResult, VnetServer, expect, expect_error, uniq

VALIDATED = "keystone: validated a token"


def validations(srv: VnetServer) -> int:
    """Round trips vnet made to Keystone for callers' tokens (its debug log)."""
    return srv.log_path.read_text(errors="replace").count(VALIDATED)


def get(url: str, token: str | None = None, **headers) -> requests.Response:
    if token is not None:
        headers["X-Auth-Token"] = token
    return requests.get(url, headers=headers, timeout=30)


def token_of(cloud, who: str) -> str:
    return cloud.keystone.token(*cloud.users[who])


class PasswordCli(Cli):
    """`openstack` with password auth: Keystone, then vnet from the catalog."""

    def __init__(self, cloud, who: str):
        super().__init__(cloud.vnet.url)
        user, password, project = cloud.users[who]
        self.auth = [
            "--os-auth-url", cloud.keystone.auth_url,
            "--os-identity-api-version", "3",
            "--os-username", user,
            "--os-password", password,
            "--os-project-name", project,
            "--os-user-domain-name", "Default",
            "--os-project-domain-name", "Default",
            "--os-region-name", "RegionOne",
        ]  # fmt: skip

    def run(self, *args, timeout: float = 120, **_):
        args = [str(a) for a in args]
        proc = subprocess.run(
            [self.exe, *self.auth, *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return CliResult(args, proc)


def sdk_password(cloud, who: str):
    import openstack.connection

    user, password, project = cloud.users[who]
    return openstack.connection.Connection(
        auth_url=cloud.keystone.auth_url,
        username=user,
        password=password,
        project_name=project,
        user_domain_name="Default",
        project_domain_name="Default",
        region_name="RegionOne",
    )


# -- refusals -----------------------------------------------------------------


def test_version_discovery_needs_no_token(keystone_cloud):
    body = expect(get(keystone_cloud.vnet.url + "/"), 200)
    assert body["versions"][0]["id"] == "v2.0"


@pytest.mark.parametrize(
    "token", [None, "", "garbage", "gAAAAABnot-a-fernet-token", "x" * 10000]
)
def test_a_missing_or_invalid_token_is_401_like_keystonemiddleware(keystone_cloud, token):
    for path in ("/v2.0/networks", "/v2.0/", "/v2.0/no-such-thing"):
        r = get(keystone_cloud.vnet.url + path, token)
        assert r.status_code == 401, f"{path}: {r.status_code} {r.text}"
        assert r.json() == {
            "error": {
                "code": 401,
                "title": "Unauthorized",
                "message": "The request you have made requires authentication.",
            }
        }
        assert r.headers["WWW-Authenticate"] == f'Keystone uri="{keystone_cloud.keystone.url}"'


def test_the_project_comes_from_the_token_not_the_headers(keystone_cloud):
    c = keystone_cloud
    alice = token_of(c, "alice")
    r = requests.post(
        c.vnet.url + "/v2.0/networks",
        json={"network": {"name": uniq("net")}},
        headers={"X-Auth-Token": alice, "X-Project-Id": c.projects["proj-b"], "X-Roles": "admin"},
        timeout=30,
    )
    net = expect(r, 201)["network"]
    assert net["project_id"] == c.projects["proj-a"]
    # And X-Roles: admin did not make alice an admin: bob's project is invisible.
    bob = token_of(c, "bob")
    bob_net = expect(
        requests.post(
            c.vnet.url + "/v2.0/networks",
            json={"network": {"name": uniq("net")}},
            headers={"X-Auth-Token": bob},
            timeout=30,
        ),
        201,
    )["network"]
    r = get(f"{c.vnet.url}/v2.0/networks/{bob_net['id']}", alice, **{"X-Roles": "admin"})
    expect_error(r, 404, "NetworkNotFound")


def test_a_revoked_token_is_refused_when_not_cached(keystone_cloud):
    c = keystone_cloud
    token = token_of(c, "alice")
    c.keystone.revoke(token)
    assert get(c.vnet.url + "/v2.0/networks", token).status_code == 401


def test_a_revoked_token_lives_until_its_cache_entry_expires(keystone_cloud, tmp_path):
    """The documented trade-off: vnet trusts a validated token for at most
    --token-cache-ttl seconds (here 3) without asking Keystone again."""
    c = keystone_cloud
    srv = VnetServer(
        c.vnet.binary,
        tmp_path / "data",
        tmp_path / "vnet.log",
        extra_args=c.vnet.extra_args + ["--token-cache-ttl", "3"],
        env=c.env,
    )
    srv.start()
    try:
        token = token_of(c, "alice")
        url = srv.url + "/v2.0/networks"
        expect(get(url, token), 200)
        c.keystone.revoke(token)
        expect(get(url, token), 200)  # cached: not asked again yet
        time.sleep(3.3)
        assert get(url, token).status_code == 401
    finally:
        srv.kill9()


def test_a_cached_token_is_dropped_when_it_expires(keystone_cloud):
    """The cache keeps a token until its own expiry when that comes before
    the TTL cap. Tokens here come from a second Keystone on the same
    database and keys whose tokens live 3 s; vnet validates them with the
    first one."""
    c = keystone_cloud
    url = c.vnet.url + "/v2.0/networks"
    before = validations(c.vnet)
    short = c.keystone.sibling("keystone-3s", "[token]\nexpiration = 3\n").start()
    try:
        token = short.token(*c.users["alice"])
        expect(get(url, token), 200)
        expect(get(url, token), 200)
    finally:
        short.stop()
    assert validations(c.vnet) - before == 1  # the second one from the cache
    time.sleep(3.5)
    assert get(url, token).status_code == 401
    assert validations(c.vnet) - before == 2  # expired in the cache: asked again


def test_the_service_token_is_renewed_before_it_expires(keystone_cloud, tmp_path):
    """vnet behind a Keystone whose tokens live 3 s: its service token is
    renewed at three quarters of that, so validations keep working."""
    c = keystone_cloud
    short = c.keystone.sibling("keystone-3s-svc", "[token]\nexpiration = 3\n").start()
    args = list(c.vnet.extra_args)
    args[args.index("--keystone-url") + 1] = short.url
    srv = VnetServer(c.vnet.binary, tmp_path / "data", tmp_path / "vnet.log", args, c.env)
    srv.start()
    try:
        url = srv.url + "/v2.0/networks"
        for _ in range(3):
            # A token from the first Keystone (it lives an hour), new each
            # time so that every request needs the service token.
            expect(get(url, token_of(c, "bob")), 200)
            time.sleep(1.5)
        log = srv.log_path.read_text()
        assert log.count("obtained the service token") >= 2, srv.log_tail()
        # Renewed ahead of time: Keystone never had to refuse an expired one
        # (which vnet would survive too, by renewing and asking again).
        refused = [line for line in log.splitlines() if VALIDATED in line and "401" in line]
        assert not refused, srv.log_tail()
    finally:
        srv.kill9()
        short.stop()


# -- the clients, end to end ----------------------------------------------------


def test_openstack_cli_with_password_auth_end_to_end(keystone_cloud):
    c = keystone_cloud
    cli = PasswordCli(c, "alice")
    name = uniq("net")
    net = cli.json("network", "create", name)
    assert net["project_id"] == c.projects["proj-a"]
    sub = cli.json(
        "subnet", "create", "--network", name, "--subnet-range", "10.7.0.0/24", uniq("sub")
    )
    port = cli.json("port", "create", "--network", name, uniq("port"))
    assert port["fixed_ips"][0]["subnet_id"] == sub["id"]
    assert name in [n["Name"] for n in cli.json("network", "list")]
    assert port["id"] in [p["ID"] for p in cli.json("port", "list")]
    cli.ok("port", "delete", port["id"])
    cli.ok("subnet", "delete", sub["id"])
    cli.ok("network", "delete", name)
    assert name not in [n["Name"] for n in cli.json("network", "list")]


def test_openstacksdk_with_password_auth_end_to_end(keystone_cloud):
    c = keystone_cloud
    conn = sdk_password(c, "bob")
    try:
        net = conn.network.create_network(name=uniq("net"))
        assert net.project_id == c.projects["proj-b"]
        sub = conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.8.0.0/24")
        port = conn.network.create_port(network_id=net.id)
        assert port.fixed_ips[0]["subnet_id"] == sub.id
        assert net.id in [n.id for n in conn.network.networks()]
        conn.network.delete_port(port)
        conn.network.delete_subnet(sub)
        conn.network.delete_network(net)
        assert net.id not in [n.id for n in conn.network.networks()]
    finally:
        conn.close()


def test_projects_are_scoped_by_the_token_and_admin_sees_all(keystone_cloud):
    c = keystone_cloud
    alice, bob = PasswordCli(c, "alice"), PasswordCli(c, "bob")
    admin = PasswordCli(c, "admin")
    net_a = alice.json("network", "create", uniq("net-a"))
    net_b = bob.json("network", "create", uniq("net-b"))
    # bob cannot see alice's network: 404 on show, absent from his list.
    res = bob.fails("network", "show", net_a["id"])
    assert "No Network found" in res.stderr or "404" in res.stderr, res
    r = get(f"{c.vnet.url}/v2.0/networks/{net_a['id']}", token_of(c, "bob"))
    expect_error(r, 404, "NetworkNotFound")
    bob_ids = [n["ID"] for n in bob.json("network", "list")]
    assert net_a["id"] not in bob_ids and net_b["id"] in bob_ids
    # The admin sees both projects' networks.
    admin_ids = [n["ID"] for n in admin.json("network", "list")]
    assert {net_a["id"], net_b["id"]} <= set(admin_ids)
    assert admin.json("network", "show", net_a["id"])["project_id"] == c.projects["proj-a"]


# -- the cache --------------------------------------------------------------------


def test_concurrent_requests_with_one_new_token_validate_it_once(keystone_cloud):
    c = keystone_cloud
    token = token_of(c, "bob")
    url = c.vnet.url + "/v2.0/networks"
    before = validations(c.vnet)
    n = 16
    barrier = threading.Barrier(n)

    def one(_):
        barrier.wait()
        return get(url, token).status_code

    with ThreadPoolExecutor(n) as pool:
        statuses = list(pool.map(one, range(n)))
    assert statuses == [200] * n
    assert validations(c.vnet) - before == 1


def p50s_ms(targets: list[tuple[str, dict]], n: int) -> list[float]:
    """Median latency of GET on each (url, headers), with the requests
    interleaved so that both see the same machine load."""
    sessions = []
    for _, headers in targets:
        session = requests.Session()
        session.headers.update(headers)
        sessions.append(session)
    for _ in range(20):  # warm the connections (and the token cache)
        for (url, _), session in zip(targets, sessions):
            session.get(url, timeout=30).raise_for_status()
    times = [[] for _ in targets]
    for _ in range(n):
        for i, ((url, _), session) in enumerate(zip(targets, sessions)):
            t = time.perf_counter()
            session.get(url, timeout=30).raise_for_status()
            times[i].append((time.perf_counter() - t) * 1000)
    return [statistics.median(t) for t in times]


def test_a_warm_token_costs_no_keystone_round_trip(keystone_cloud, server):
    """The figure in the README: GET /v2.0/networks with a cached token vs
    the noauth server of the same run, interleaved; Keystone is asked once,
    for the first request."""
    c = keystone_cloud
    # A project of its own on both servers, so both lists are equally empty.
    project = uniq("proj-fig")
    c.keystone.user(project, "fig-secret", c.keystone.project(project), "member")
    token = c.keystone.token(project, "fig-secret", project)
    n = 300
    before = validations(c.vnet)
    ks_p50, noauth_p50 = p50s_ms(
        [
            (c.vnet.url + "/v2.0/networks", {"X-Auth-Token": token}),
            (server.url + "/v2.0/networks", {"X-Project-Id": uniq("p")}),
        ],
        n,
    )
    asked = validations(c.vnet) - before
    direct = []
    service = c.keystone.admin_token()
    for _ in range(20):
        t = time.perf_counter()
        r = get(f"{c.keystone.auth_url}/auth/tokens?nocatalog", service, **{"X-Subject-Token": token})
        direct.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200
    figure = {
        "requests": n + 20,
        "keystone_validations": asked,
        "p50_ms_keystone_warm": round(ks_p50, 3),
        "p50_ms_noauth": round(noauth_p50, 3),
        "p50_ms_one_keystone_validation": round(statistics.median(direct), 3),
    }
    print("keystone figure:", json.dumps(figure))
    assert asked == 1  # the first request of the warm-up, then the cache


def test_a_revoked_service_token_is_renewed(keystone_cloud):
    """Disabling vnet's own user revokes its service token in Keystone; once
    re-enabled, vnet's next validation is refused, and vnet gets a new
    service token and asks again instead of failing the caller."""
    c = keystone_cloud
    ks = c.keystone
    vnet_user = ks.admin_call("GET", "/users?name=vnet")["users"][0]["id"]
    fetched = c.vnet.log_path.read_text().count("obtained the service token")
    ks.admin_call("PATCH", f"/users/{vnet_user}", {"user": {"enabled": False}})
    ks.admin_call("PATCH", f"/users/{vnet_user}", {"user": {"enabled": True}})
    # Revocation events have a one-second resolution: a token issued in the
    # same second as the event counts as revoked too.
    time.sleep(1.1)
    expect(get(c.vnet.url + "/v2.0/networks", token_of(c, "alice")), 200)
    assert c.vnet.log_path.read_text().count("obtained the service token") == fetched + 1


# -- Keystone down ------------------------------------------------------------------


def test_keystone_down_is_503_for_uncached_tokens_and_cached_ones_still_work(keystone_cloud):
    c = keystone_cloud
    url = c.vnet.url + "/v2.0/networks"
    cached, uncached = token_of(c, "alice"), token_of(c, "alice")
    expect(get(url, cached), 200)
    c.keystone.stop()
    try:
        r = get(url, uncached)
        expect_error(r, 503, "ServiceUnavailable")
        assert "Keystone" in r.json()["NeutronError"]["message"]
        expect(get(url, cached), 200)
        # Not cached as a failure: still 503 while Keystone is away.
        assert get(url, uncached).status_code == 503
    finally:
        c.keystone.start()
    expect(get(url, uncached), 200)


def test_agents_need_the_agent_token_and_the_trace_a_keystone_token(keystone_cloud):
    """Keystone mode leaves nothing open: /vnet/v1/hosts answers agents (the
    agent token), /vnet/v1/trace tenants (a Keystone token)."""
    from conftest import AGENT_TOKEN

    base = keystone_cloud.vnet.url
    for headers in [{}, {"X-Auth-Token": token_of(keystone_cloud, "admin")}, {"X-Vnet-Agent-Token": "guess"}]:
        assert requests.get(f"{base}/vnet/v1/hosts", headers=headers, timeout=30).status_code == 401
    ok = requests.get(f"{base}/vnet/v1/hosts", headers={"X-Vnet-Agent-Token": AGENT_TOKEN}, timeout=30)
    assert ok.status_code == 200 and "hosts" in ok.json()
    body = {"trace": {"from_port": "nope", "to_ip": "10.0.0.1", "protocol": "tcp"}}
    assert requests.post(f"{base}/vnet/v1/trace", json=body, timeout=30).status_code == 401
    traced = requests.post(
        f"{base}/vnet/v1/trace", json=body, timeout=30,
        headers={"X-Auth-Token": token_of(keystone_cloud, "alice")},
    )  # fmt: skip
    assert traced.status_code == 404  # past Keystone; the port does not exist
