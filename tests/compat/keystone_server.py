"""A real OpenStack Keystone for the suite: bootstrapped on sqlite with fernet
tokens in a temp dir, served by gunicorn on a free loopback port.

Keystone lives in its own virtualenv (tests/compat/.keystone-venv, made by
scripts/test.sh from keystone-requirements.txt, or $KEYSTONE_VENV), apart from
the clients' venv. This module drives it from outside: `keystone-manage` for
the bootstrap, then its v3 REST API with `requests`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import requests

from helpers import REPO_ROOT, _die_with_parent, free_port

ADMIN_PASSWORD = "admin-secret"
REGION = "RegionOne"

# Loaded in gunicorn's worker. gunicorn's arguments must not reach Keystone:
# it parses sys.argv with oslo.config at import time and exits on options it
# does not know. And the worker dies with its master, which dies with pytest
# (an orphaned worker would keep serving the port).
WSGI_SHIM = """\
import ctypes, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
sys.argv = sys.argv[:1]
from keystone.wsgi.api import application  # noqa: E402,F401
"""


def keystone_venv() -> Path:
    venv = Path(os.environ.get("KEYSTONE_VENV", REPO_ROOT / "tests/compat/.keystone-venv"))
    if not (venv / "bin" / "keystone-manage").is_file():
        raise RuntimeError(
            f"Keystone is not installed in {venv}: run scripts/test.sh, or "
            f"python3 -m venv {venv} && {venv}/bin/pip install "
            "-r tests/compat/keystone-requirements.txt"
        )
    return venv


class KeystoneServer:
    """One Keystone: `start()` bootstraps it (once) and serves it; `stop()`
    stops the server but keeps its database and keys, so a restart honours
    the tokens it issued before."""

    def __init__(self, work_dir: Path, name: str = "keystone"):
        self.dir = Path(work_dir)
        self.venv = keystone_venv()
        self.conf = self.dir / "keystone.conf"
        self.extra_conf: Path | None = None
        self.log_path = self.dir / f"{name}.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.auth_url = f"{self.url}/v3"
        self.proc: subprocess.Popen | None = None
        self.bootstrapped = False
        self._admin_token: str | None = None

    # -- lifecycle ---------------------------------------------------------

    def _env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        files = [self.conf] + ([self.extra_conf] if self.extra_conf else [])
        env["OS_KEYSTONE_CONFIG_FILES"] = ";".join(map(str, files))
        return env

    def _manage(self, *args):
        cmd = [str(self.venv / "bin" / "keystone-manage"), "--config-file", str(self.conf), *args]
        proc = subprocess.run(
            cmd, env=self._env(), capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}"

    def bootstrap(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        d = self.dir
        self.conf.write_text(
            f"""[DEFAULT]
log_file = {d / "keystone-app.log"}
[database]
connection = sqlite:///{d / "keystone.db"}
[token]
provider = fernet
[fernet_tokens]
key_repository = {d / "fernet-keys"}
[fernet_receipts]
key_repository = {d / "fernet-receipts"}
[credential]
key_repository = {d / "credential-keys"}
[identity]
# bcrypt's cheapest setting: every token issued checks a password.
password_hash_rounds = 4
[cache]
# Without it each token validation re-reads sqlite: seconds per call.
enabled = true
backend = dogpile.cache.memory
"""
        )
        (d / "app").mkdir(exist_ok=True)
        (d / "app" / "keystone_app.py").write_text(WSGI_SHIM)
        user = ["--keystone-user", str(os.getuid()), "--keystone-group", str(os.getgid())]
        self._manage("db_sync")
        self._manage("fernet_setup", *user)
        self._manage("credential_setup", *user)
        self._manage(
            "bootstrap",
            "--bootstrap-password", ADMIN_PASSWORD,
            "--bootstrap-username", "admin",
            "--bootstrap-project-name", "admin",
            "--bootstrap-role-name", "admin",
            "--bootstrap-service-name", "keystone",
            "--bootstrap-region-id", REGION,
            "--bootstrap-admin-url", self.auth_url,
            "--bootstrap-public-url", self.auth_url,
            "--bootstrap-internal-url", self.auth_url,
        )  # fmt: skip
        self.bootstrapped = True

    def start(self, timeout: float = 60.0) -> "KeystoneServer":
        if not self.bootstrapped:
            self.bootstrap()
        cmd = [
            str(self.venv / "bin" / "gunicorn"),
            "--workers", "1",
            "--no-control-socket",
            "--bind", f"127.0.0.1:{self.port}",
            "--pythonpath", str(self.dir / "app"),
            "keystone_app:application",
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Keystone exited; log:\n{self.log_tail()}")
            try:
                if requests.get(self.auth_url, timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Keystone did not answer in {timeout}s:\n{self.log_tail()}")
            time.sleep(0.1)  # readiness poll

    def sibling(self, name: str, conf_overrides: str) -> "KeystoneServer":
        """A second Keystone on the same database and keys (so each honours
        the other's tokens), with some options changed; not started."""
        other = KeystoneServer(self.dir, name)
        other.extra_conf = self.dir / f"{name}.conf"
        other.extra_conf.write_text(conf_overrides)
        other.bootstrapped = True
        return other

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- identity API ------------------------------------------------------

    def token(self, user: str, password: str, project: str) -> str:
        """A project-scoped token for `user` (password method)."""
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": user, "domain": {"id": "default"}, "password": password}
                    },
                },
                "scope": {"project": {"name": project, "domain": {"id": "default"}}},
            }
        }
        r = requests.post(f"{self.auth_url}/auth/tokens?nocatalog", json=body, timeout=30)
        assert r.status_code == 201, f"token for {user}: {r.status_code} {r.text}"
        return r.headers["X-Subject-Token"]

    def revoke(self, token: str):
        r = requests.delete(
            f"{self.auth_url}/auth/tokens",
            headers={"X-Auth-Token": self.admin_token(), "X-Subject-Token": token},
            timeout=30,
        )
        assert r.status_code == 204, f"revoke: {r.status_code} {r.text}"

    def admin_token(self) -> str:
        if self._admin_token is None:
            self._admin_token = self.token("admin", ADMIN_PASSWORD, "admin")
        return self._admin_token

    def admin_call(self, method: str, path: str, body=None) -> dict:
        r = requests.request(
            method,
            f"{self.auth_url}{path}",
            json=body,
            headers={"X-Auth-Token": self.admin_token()},
            timeout=30,
        )
        assert r.status_code in (200, 201, 204), f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else {}

    def role_id(self, name: str) -> str:
        return self.admin_call("GET", f"/roles?name={name}")["roles"][0]["id"]

    def project(self, name: str) -> str:
        body = {"project": {"name": name, "domain_id": "default"}}
        return self.admin_call("POST", "/projects", body)["project"]["id"]

    def user(self, name: str, password: str, project_id: str, role: str) -> str:
        body = {"user": {"name": name, "password": password, "domain_id": "default"}}
        uid = self.admin_call("POST", "/users", body)["user"]["id"]
        self.admin_call("PUT", f"/projects/{project_id}/users/{uid}/roles/{self.role_id(role)}")
        return uid

    def register_network_service(self, url: str):
        """The catalog entry by which clients find vnet, as for Neutron."""
        svc = self.admin_call(
            "POST", "/services", {"service": {"type": "network", "name": "neutron"}}
        )["service"]["id"]
        for interface in ("public", "internal", "admin"):
            self.admin_call(
                "POST",
                "/endpoints",
                {
                    "endpoint": {
                        "service_id": svc,
                        "interface": interface,
                        "url": url,
                        "region_id": REGION,
                    }
                },
            )
