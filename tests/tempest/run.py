"""Runs OpenStack's own network API tests (tempest.api.network) against vnet.

What a cloud does to certify Neutron, done against vnet on loopback: a real
Keystone (bootstrapped on sqlite, tests/compat/keystone_server.py), vnet in
keystone mode found through Keystone's catalog, an external network for the
floating IP tests, and tempest with dynamic credentials (a fresh project and
user per test class). Prints tempest's counts and the failed tests; exits
non-zero on any failure, or when fewer than --min-passed tests passed.

    tests/tempest/.venv/bin/python tests/tempest/run.py [--regex R] [--keep DIR]

scripts/tempest.sh makes the venv and calls this.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "compat"))

from helpers import VnetServer, find_vnet_bin  # noqa: E402
from keystone_server import ADMIN_PASSWORD, REGION, KeystoneServer  # noqa: E402

import requests  # noqa: E402
import tempest  # noqa: E402

TEMPEST = Path(tempest.__file__).resolve().parent

# What vnet passes today, a floor against regressions (Neutron 29 with ML2,
# its router plugin and no agents passes 239 on the same machine).
MIN_PASSED = 250
PUBLIC_CIDR = "172.24.4.0/24"

# Tests of what vnet deliberately does not do, each with its reason (the
# README repeats them). Everything else tempest skips, it skips by itself:
# tests of services vnet is not (Nova) or of extensions vnet does not list.
EXCLUDED = {
    r"test_routers_dvr\.RoutersTestDVR\.test_centralized_router_creation": (
        "vnet's routers are always distributed: it refuses distributed=false"
    ),
}


def create_public_network(keystone: KeystoneServer, vnet_url: str) -> str:
    """The external network tempest's floating IP tests allocate from."""
    headers = {"X-Auth-Token": keystone.admin_token()}
    r = requests.post(
        f"{vnet_url}/v2.0/networks",
        json={"network": {"name": "public", "router:external": True}},
        headers=headers,
        timeout=30,
    )
    r.raise_for_status()
    net = r.json()["network"]["id"]
    r = requests.post(
        f"{vnet_url}/v2.0/subnets",
        json={
            "subnet": {
                "name": "public-subnet",
                "network_id": net,
                "ip_version": 4,
                "cidr": PUBLIC_CIDR,
                "enable_dhcp": False,
            }
        },
        headers=headers,
        timeout=30,
    )
    r.raise_for_status()
    return net


def extensions(keystone: KeystoneServer, vnet_url: str) -> list[str]:
    r = requests.get(
        f"{vnet_url}/v2.0/extensions",
        headers={"X-Auth-Token": keystone.admin_token()},
        timeout=30,
    )
    r.raise_for_status()
    return sorted(e["alias"] for e in r.json()["extensions"])


def tempest_conf(keystone: KeystoneServer, public_net: str, exts: list[str]) -> str:
    services = ["cinder", "glance", "nova", "swift", "horizon", "aodh", "ironic"]
    off = "\n".join(f"{s} = false" for s in services)
    return f"""[DEFAULT]
log_dir = logs
log_file = tempest.log

[auth]
use_dynamic_credentials = true
admin_username = admin
admin_password = {ADMIN_PASSWORD}
admin_project_name = admin
admin_domain_name = Default
tempest_roles = member
create_isolated_networks = false

[identity]
uri_v3 = {keystone.auth_url}
auth_version = v3
region = {REGION}
disable_ssl_certificate_validation = true

[identity-feature-enabled]
api_v2 = false

[service_available]
neutron = true
{off}

[network]
public_network_id = {public_net}
floating_network_name = public
project_network_cidr = 10.100.0.0/16
project_network_mask_bits = 28
project_networks_reachable = false
shared_physical_network = false

[network-feature-enabled]
api_extensions = {", ".join(exts)}
ipv6 = true
ipv6_subnet_attributes = true
port_security = true
floating_ips = true

[validation]
run_validation = false
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--regex", default=r"^tempest\.api\.network\.")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--min-passed", type=int, default=MIN_PASSED)
    ap.add_argument("--keep", type=Path, help="work directory to keep (default: a temporary one)")
    args = ap.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="vnet-tempest-"))
    work.mkdir(parents=True, exist_ok=True)
    venv_bin = Path(sys.executable).parent
    keystone = KeystoneServer(work / "keystone")
    vnet = None
    try:
        keystone.start()
        service = keystone.project("service")
        keystone.user("vnet", "vnet-secret", service, "service")
        env = dict(os.environ, VNET_KEYSTONE_PASSWORD="vnet-secret", VNET_AGENT_TOKEN="tempest-agents")
        vnet = VnetServer(
            find_vnet_bin(),
            work / "vnet-data",
            work / "vnet.log",
            extra_args=[
                "--auth", "keystone",
                "--keystone-url", keystone.url,
                "--keystone-user", "vnet",
                "--keystone-project", "service",
            ],  # fmt: skip
            env=env,
        )
        vnet.start()
        keystone.register_network_service(vnet.url)
        public = create_public_network(keystone, vnet.url)
        exts = extensions(keystone, vnet.url)

        # A workspace of tempest's own shape, without `tempest init` (which
        # registers it by name in ~/.tempest for every later run).
        ws = work / "tempest"
        for d in ("etc", "logs"):
            (ws / d).mkdir(parents=True, exist_ok=True)
        (ws / "etc" / "tempest.conf").write_text(tempest_conf(keystone, public, exts))
        (ws / ".stestr.conf").write_text(
            f"[DEFAULT]\ntest_path={TEMPEST}/test_discover\ntop_dir={TEMPEST.parent}\n"
        )
        print(f"tempest workspace {ws}; vnet {vnet.url}; keystone {keystone.url}", flush=True)
        cmd = [
            str(venv_bin / "tempest"), "run",
            "--regex", args.regex,
            "--concurrency", str(args.concurrency),
            "--exclude-regex", "|".join(EXCLUDED),
        ]  # fmt: skip
        env = dict(os.environ, TEMPEST_CONFIG_DIR=str(ws / "etc"), TEMPEST_CONFIG="tempest.conf")
        proc = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True)
        out = proc.stdout + proc.stderr
        (work / "tempest-run.txt").write_text(out)
        counts = summarize(out)
        failed = counts.get("Failed", 0)
        passed = counts.get("Passed", 0)
        if failed or passed < args.min_passed or proc.returncode not in (0, 1):
            print(out[-20000:])
        print(
            "tempest.api.network against vnet: "
            + ", ".join(f"{k.lower()} {v}" for k, v in counts.items()),
            flush=True,
        )
        for test, why in EXCLUDED.items():
            print(f"  not run: {test.replace(chr(92), '')}: {why}")
        for line in failed_tests(out):
            print(f"  FAILED {line}")
        if failed:
            print(f"FAILED: {failed} tempest tests failed (log: {work})")
            return 1
        if passed < args.min_passed:
            print(f"FAILED: {passed} passed, fewer than {args.min_passed} (log: {work})")
            return 1
        return 0
    finally:
        if vnet is not None:
            vnet.stop()
        keystone.stop()
        if args.keep is None and not os.environ.get("VNET_TEMPEST_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


def summarize(out: str) -> dict[str, int]:
    """tempest's `Totals` block: ` - Passed: 215` and the like."""
    counts = {}
    for key in ("Passed", "Failed", "Skipped", "Expected Fail", "Unexpected Success"):
        m = re.search(rf"^ - {key}: (\d+)$", out, re.M)
        if m:
            counts[key] = int(m.group(1))
    return counts


def failed_tests(out: str) -> list[str]:
    return sorted(set(re.findall(r"^\{\d+\} (\S+) \[[\d.]+s\] \.\.\. FAILED$", out, re.M)))


if __name__ == "__main__":
    sys.exit(main())
