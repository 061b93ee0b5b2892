"""Fixtures: a `vnet server` per session (or per test), and clients for it.

Keystone fixtures at the end need its venv (see keystone_server.py).
Nothing is built here: the binary comes from $VNET_BIN or target/debug/vnet
(scripts/test.sh builds it first).
"""

from __future__ import annotations

import os
import types

import pytest

from helpers import Cli, VnetServer, find_vnet_bin, sdk_connection, uniq


@pytest.fixture(scope="session")
def vnet_bin():
    return find_vnet_bin()


def _server(vnet_bin, tmp_dir):
    return VnetServer(vnet_bin, tmp_dir / "data", tmp_dir / "vnet.log")


@pytest.fixture(scope="session")
def server(vnet_bin, tmp_path_factory):
    """One server shared by the tests that don't restart it.

    Tests stay independent by using unique names and fresh project ids.
    """
    srv = _server(vnet_bin, tmp_path_factory.mktemp("vnet-shared"))
    srv.start()
    # Every test that acts as the admin makes its resources in the default
    # project (`admin`): over the whole suite that is more than one
    # project's default quota. Tests of quotas use projects of their own.
    unlimited = {k: -1 for k in ("network", "subnet", "port", "router", "floatingip",
                                 "security_group", "security_group_rule", "rbac_policy")}
    srv.api().put("/v2.0/quotas/admin", {"quota": unlimited}).raise_for_status()
    try:
        yield srv
    finally:
        srv.stop()
        srv.kill9()


@pytest.fixture
def fresh_server(vnet_bin, tmp_path):
    """A server of this test's own, on an empty data dir (killed at the end)."""
    srv = _server(vnet_bin, tmp_path)
    srv.start()
    try:
        yield srv
    finally:
        srv.kill9()


@pytest.fixture(autouse=True)
def _server_still_running(request):
    """A test that crashed the shared server fails with the server's log."""
    yield
    if "server" in request.fixturenames:
        srv = request.getfixturevalue("server")
        assert srv.alive(), f"vnet server died during the test; log:\n{srv.log_tail()}"


@pytest.fixture
def api(server):
    """Raw HTTP as the default caller (no X-Project-Id: admin of the default project)."""
    return server.api()


@pytest.fixture
def tenant(server):
    """Factory: a raw-HTTP client for a fresh (or given) non-admin project."""

    def make(project: str | None = None, roles: str = "member"):
        return server.api(project=project or uniq("proj"), roles=roles)

    return make


@pytest.fixture(scope="session")
def default_project(server):
    """The project vnet gives requests that carry no X-Project-Id."""
    api = server.api()
    net = api.network()
    api.remove("networks", net["id"])
    return net["project_id"]


@pytest.fixture
def sdk(server):
    """Factory: an openstacksdk Connection (project=None: default admin)."""
    conns = []

    def make(project: str | None = None, roles: str | None = None):
        conn = sdk_connection(server.url, project=project, roles=roles)
        conns.append(conn)
        return conn

    yield make
    for conn in conns:
        conn.close()


@pytest.fixture
def cli(server):
    return Cli(server.url)


# ---------------------------------------------------------------------------
# Keystone (test_keystone.py): a real Keystone and a vnet server behind it
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def keystone(tmp_path_factory):
    """A real Keystone for the session, on a free port; torn down at the end."""
    from keystone_server import KeystoneServer

    ks = KeystoneServer(tmp_path_factory.mktemp("keystone"))
    ks.start()
    try:
        yield ks
    finally:
        ks.stop()


AGENT_TOKEN = "agents-secret"


@pytest.fixture(scope="session")
def keystone_cloud(vnet_bin, keystone, tmp_path_factory):
    """vnet with `--auth keystone` and the Keystone it trusts, with:
    - `admin` (role admin, project admin): sees every project;
    - `alice` (role member, project proj-a) and `bob` (member, proj-b);
    - vnet's own service user `vnet` (role service, project service);
    - vnet in the catalog as the `network` service, so clients find it.
    """
    from keystone_server import ADMIN_PASSWORD

    projects = {name: keystone.project(name) for name in ("proj-a", "proj-b", "service")}
    projects["admin"] = keystone.admin_call("GET", "/projects?name=admin")["projects"][0]["id"]
    keystone.user("vnet", "vnet-secret", projects["service"], "service")
    keystone.user("alice", "alice-secret", projects["proj-a"], "member")
    keystone.user("bob", "bob-secret", projects["proj-b"], "member")
    tmp = tmp_path_factory.mktemp("vnet-keystone")
    env = dict(os.environ, VNET_KEYSTONE_PASSWORD="vnet-secret", VNET_AGENT_TOKEN=AGENT_TOKEN)
    env["RUST_LOG"] = "info,api::keystone=debug"  # one line per validation round trip
    srv = VnetServer(
        vnet_bin,
        tmp / "data",
        tmp / "vnet.log",
        extra_args=[
            "--auth", "keystone",
            "--keystone-url", keystone.url,
            "--keystone-user", "vnet",
            "--keystone-project", "service",
        ],  # fmt: skip
        env=env,
    )
    srv.start()
    keystone.register_network_service(srv.url)
    users = {
        "admin": ("admin", ADMIN_PASSWORD, "admin"),
        "alice": ("alice", "alice-secret", "proj-a"),
        "bob": ("bob", "bob-secret", "proj-b"),
    }
    try:
        yield types.SimpleNamespace(
            keystone=keystone, vnet=srv, projects=projects, users=users, env=env
        )
    finally:
        srv.stop()
        srv.kill9()
