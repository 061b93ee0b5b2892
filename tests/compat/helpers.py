"""Helpers for the vnet compatibility suite.

The suite treats `vnet server` as a black box: it starts the binary on a free
loopback port with a fresh data directory and talks to it the way real
clients do (raw HTTP with `requests`, openstacksdk, and the `openstack` CLI).
Everything asserted here is what the real Neutron v2.0 API does (see
shared/neutron/ for recorded exchanges), plus vnet's documented noauth
scoping (`X-Project-Id` / `X-Roles`).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]

# collection path -> (singular body key, plural body key)
RESOURCES = {
    "networks": ("network", "networks"),
    "subnets": ("subnet", "subnets"),
    "ports": ("port", "ports"),
    "security-groups": ("security_group", "security_groups"),
    "security-group-rules": ("security_group_rule", "security_group_rules"),
    "routers": ("router", "routers"),
    "floatingips": ("floatingip", "floatingips"),
    "subnetpools": ("subnetpool", "subnetpools"),
    "default-security-group-rules": ("default_security_group_rule", "default_security_group_rules"),
    "rbac-policies": ("rbac_policy", "rbac_policies"),
    "address-groups": ("address_group", "address_groups"),
}

TIMESTAMP_RE = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"


def uniq(prefix: str = "t") -> str:
    """A name (or project id) no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def find_vnet_bin() -> Path:
    env = os.environ.get("VNET_BIN")
    path = Path(env) if env else REPO_ROOT / "target" / "debug" / "vnet"
    if not path.is_file() or not os.access(path, os.X_OK):
        raise RuntimeError(
            f"vnet binary not found at {path}: run `cargo build -p vnet` "
            "or point VNET_BIN at the binary"
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VnetServer:
    """One `vnet server` process on a data dir; can be killed and restarted."""

    def __init__(
        self, binary: Path, data_dir: Path, log_path: Path, extra_args=(), env=None
    ):
        self.binary = Path(binary)
        self.data_dir = Path(data_dir)
        self.log_path = Path(log_path)
        self.extra_args = list(extra_args)
        self.env = env  # None: this process's environment
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.url: str | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self, timeout: float = 30.0) -> "VnetServer":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        last_error = None
        for _ in range(3):  # a free port can be taken between probe and bind
            try:
                self._start_once(timeout)
                return self
            except _EarlyExit as e:
                last_error = e
        raise RuntimeError(f"vnet server did not start: {last_error}")

    def _start_once(self, timeout: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            str(self.binary),
            "server",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--data-dir",
            str(self.data_dir),
            *self.extra_args,
        ]
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise _EarlyExit(f"exited with status {rc}; log tail:\n{self.log_tail()}")
            try:
                if requests.get(self.url + "/", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.kill9()
                raise RuntimeError(
                    f"vnet server did not answer GET / within {timeout}s; "
                    f"log tail:\n{self.log_tail()}"
                )
            time.sleep(0.05)  # readiness poll, not synchronisation

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL: the crash the durability test simulates."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill9()

    def restart(self) -> "VnetServer":
        self.stop()
        return self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- clients -----------------------------------------------------------

    def api(self, project: str | None = None, roles: str | None = None, **kw) -> "Api":
        return Api(self.url, project=project, roles=roles, **kw)


class _EarlyExit(Exception):
    pass


def _die_with_parent() -> None:
    """In the child: SIGKILL when pytest dies, so no server outlives a run."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


# ---------------------------------------------------------------------------
# Raw HTTP
# ---------------------------------------------------------------------------


def describe(resp: requests.Response) -> str:
    req = resp.request
    body = req.body
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    return (
        f"{req.method} {req.url} body={str(body)[:500]} -> {resp.status_code} "
        f"{resp.text[:1500]}"
    )


def expect(resp: requests.Response, status: int):
    """Assert the status code; return the decoded JSON body (None if empty)."""
    assert resp.status_code == status, f"expected {status}: {describe(resp)}"
    if not resp.content:
        return None
    return resp.json()


def expect_error(resp: requests.Response, status: int, error_type: str | set | None):
    """Assert a Neutron error: status, `NeutronError` shape and its type."""
    assert resp.status_code == status, f"expected {status} {error_type}: {describe(resp)}"
    try:
        body = resp.json()
    except ValueError:
        raise AssertionError(f"error body is not JSON: {describe(resp)}") from None
    assert isinstance(body, dict) and "NeutronError" in body, (
        f"no NeutronError in body: {describe(resp)}"
    )
    err = body["NeutronError"]
    assert set(err) >= {"type", "message", "detail"}, f"bad NeutronError: {err}"
    assert isinstance(err["message"], str) and err["message"], f"empty message: {err}"
    if error_type is not None:
        allowed = {error_type} if isinstance(error_type, str) else set(error_type)
        assert err["type"] in allowed, (
            f"expected NeutronError type {sorted(allowed)}, got {err['type']!r}: "
            f"{describe(resp)}"
        )
    return err


class Api:
    """`requests` against the Neutron API, scoped like a noauth caller.

    project=None sends no X-Project-Id: vnet then acts as admin of its
    default project (what `openstack --os-auth-type none` does).
    """

    def __init__(
        self,
        base_url: str,
        project: str | None = None,
        roles: str | None = None,
        project_header: str = "X-Project-Id",
        timeout: float = 30.0,
    ):
        self.base = base_url.rstrip("/")
        self.project = project
        self.timeout = timeout
        self.session = requests.Session()
        if project is not None:
            self.session.headers[project_header] = project
        if roles is not None:
            self.session.headers["X-Roles"] = roles

    # -- plain requests ----------------------------------------------------

    def request(self, method, path, body=None, *, raw=None, params=None, headers=None):
        url = path if path.startswith("http") else self.base + path
        hdrs = dict(headers or {})
        kwargs = {}
        if raw is not None:
            hdrs.setdefault("Content-Type", "application/json")
            kwargs["data"] = raw
        elif body is not None:
            kwargs["json"] = body
        return self.session.request(
            method, url, params=params, headers=hdrs, timeout=self.timeout, **kwargs
        )

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    # -- resource conveniences (assert success) ----------------------------

    def create(self, collection: str, **attrs) -> dict:
        one, _ = RESOURCES[collection]
        return expect(self.post(f"/v2.0/{collection}", {one: attrs}), 201)[one]

    def create_bulk(self, collection: str, items: list[dict]) -> list[dict]:
        _, many = RESOURCES[collection]
        return expect(self.post(f"/v2.0/{collection}", {many: items}), 201)[many]

    def show(self, collection: str, rid: str) -> dict:
        one, _ = RESOURCES[collection]
        return expect(self.get(f"/v2.0/{collection}/{rid}"), 200)[one]

    def list(self, collection: str, params=None) -> list[dict]:
        _, many = RESOURCES[collection]
        return expect(self.get(f"/v2.0/{collection}", params=params), 200)[many]

    def list_own(self, collection: str, params=None) -> list[dict]:
        """List with a project_id filter: shared networks of others left out."""
        query = list(params.items()) if isinstance(params, dict) else list(params or [])
        return self.list(collection, query + [("project_id", self.project)])

    def update(self, collection: str, rid: str, **attrs) -> dict:
        one, _ = RESOURCES[collection]
        return expect(self.put(f"/v2.0/{collection}/{rid}", {one: attrs}), 200)[one]

    def remove(self, collection: str, rid: str) -> None:
        expect(self.delete(f"/v2.0/{collection}/{rid}"), 204)

    def network(self, **attrs) -> dict:
        attrs.setdefault("name", uniq("net"))
        return self.create("networks", **attrs)

    def subnet(self, network_id: str, cidr: str, **attrs) -> dict:
        ip_version = ipaddress.ip_network(cidr, strict=False).version
        attrs.setdefault("name", uniq("sub"))
        return self.create(
            "subnets", network_id=network_id, cidr=cidr, ip_version=ip_version, **attrs
        )

    def port(self, network_id: str, **attrs) -> dict:
        return self.create("ports", network_id=network_id, **attrs)

    def network_with_subnet(self, cidr: str = "10.0.0.0/24", **subnet_attrs):
        net = self.network()
        return net, self.subnet(net["id"], cidr, **subnet_attrs)

    def security_group(self, **attrs) -> dict:
        attrs.setdefault("name", uniq("sg"))
        return self.create("security-groups", **attrs)


# ---------------------------------------------------------------------------
# openstacksdk
# ---------------------------------------------------------------------------


def sdk_connection(url: str, project: str | None = None, roles: str | None = None):
    """An openstacksdk Connection to a noauth endpoint.

    keystoneauth's `none` plugin takes the endpoint as its only option; the
    SDK then reads the version document at the root like the CLI does.
    Project scoping headers ride on the keystoneauth session.
    """
    import openstack.connection

    conn = openstack.connection.Connection(auth_type="none", auth={"endpoint": url})
    if project is not None:
        conn.session.additional_headers["X-Project-Id"] = project
    if roles is not None:
        conn.session.additional_headers["X-Roles"] = roles
    return conn


# ---------------------------------------------------------------------------
# openstack CLI
# ---------------------------------------------------------------------------


def find_openstack_cli() -> str:
    beside = Path(sys.executable).parent / "openstack"
    if beside.is_file():
        return str(beside)
    found = shutil.which("openstack")
    if not found:
        raise RuntimeError("the `openstack` CLI is not installed (pip install -r requirements.txt)")
    return found


class CliResult:
    def __init__(self, args, proc: subprocess.CompletedProcess):
        self.args = args
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    def __repr__(self):
        return (
            f"$ openstack {' '.join(self.args)}\n(exit {self.returncode})\n"
            f"stdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-2000:]}"
        )


class Cli:
    """Runs `openstack --os-auth-type none --os-endpoint URL ...`."""

    def __init__(self, url: str):
        self.url = url
        self.exe = find_openstack_cli()
        # No OS_* variable of the caller's may leak into the CLI's config.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}

    def run(self, *args, use_env_vars: bool = False, timeout: float = 120) -> CliResult:
        args = [str(a) for a in args]
        env = dict(self.env)
        if use_env_vars:
            env.update(OS_AUTH_TYPE="none", OS_ENDPOINT=self.url)
            cmd = [self.exe, *args]
        else:
            cmd = [self.exe, "--os-auth-type", "none", "--os-endpoint", self.url, *args]
        proc = subprocess.run(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return CliResult(args, proc)

    def ok(self, *args, **kw) -> CliResult:
        res = self.run(*args, **kw)
        assert res.returncode == 0, f"command failed:\n{res!r}"
        return res

    def json(self, *args, **kw):
        res = self.ok(*args, "-f", "json", **kw)
        try:
            return json.loads(res.stdout)
        except ValueError:
            raise AssertionError(f"output is not JSON:\n{res!r}") from None

    def fails(self, *args, **kw) -> CliResult:
        res = self.run(*args, **kw)
        assert res.returncode != 0, f"command should have failed:\n{res!r}"
        return res


# ---------------------------------------------------------------------------
# Neutron facts
# ---------------------------------------------------------------------------


def eui64(cidr: str, mac: str) -> str:
    """The SLAAC address Neutron gives a port: prefix + modified EUI-64 of the MAC."""
    net = ipaddress.IPv6Network(cidr)
    b = [int(x, 16) for x in mac.split(":")]
    iid = bytes([b[0] ^ 0x02, b[1], b[2], 0xFF, 0xFE, b[3], b[4], b[5]])
    return str(ipaddress.IPv6Address(int(net.network_address) | int.from_bytes(iid, "big")))


def ips_of(port: dict) -> list[str]:
    return [f["ip_address"] for f in port["fixed_ips"]]
