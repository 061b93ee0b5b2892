"""The README's command sequences, run as written (root).

Every ```sh block of README.md runs, in document order, in one bash (so a
variable set in one block is there in the next), with `set -e`: a command
that fails fails the test. A block is left out only when the line above it
says `<!-- not run by tests/compat/test_readme.py: REASON -->`. The only changes to the text, so that the walkthrough never meets
a lab or server of the user's: the lab's name (`VNET_LAB`, and its hosts'
names `lab-hN`) and its address (`VNET_LAB_LISTEN`, and 127.0.0.1:9696 in
the text) are this test's own. The
binary under test (`VNET_BIN`) and the pinned `openstack` CLI come first on
PATH. The lab is taken down at the end even when a command failed.

It also checks two promises the README makes around those commands: the
lab leaves nothing behind, and `./vnet-data` (scripts/run.sh's) is ignored
by git.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO_ROOT, free_port

SKIP = "<!-- not run by tests/compat/test_readme.py:"


def readme_blocks(text: str) -> tuple[list[str], list[str]]:
    """The sh blocks to run, and the reasons of those left out."""
    blocks, skipped = [], []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```sh":
            above = next((l.strip() for l in reversed(lines[:i]) if l.strip()), "")
            j = i + 1
            while lines[j].strip() != "```":
                j += 1
            block = "\n".join(lines[i + 1 : j])
            if above.startswith(SKIP):
                skipped.append(above)
            else:
                blocks.append(block)
            i = j
        i += 1
    return blocks, skipped


def test_the_readme_lists_its_blocks_and_why_some_are_not_run():
    blocks, skipped = readme_blocks((REPO_ROOT / "README.md").read_text())
    assert any("vnet lab up" in b for b in blocks)
    assert any("floating ip port forwarding create" in b for b in blocks)
    assert blocks[-1].strip().startswith("vnet lab down"), blocks[-1]
    # Every block left out says why.
    assert all(len(s) > len(SKIP) + 5 for s in skipped), skipped


def test_run_sh_data_dir_is_ignored_by_git():
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(
        ["git", "check-ignore", "-q", "vnet-data/"], cwd=REPO_ROOT, check=False
    )
    assert out.returncode == 0, "./vnet-data is not ignored"


@pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")
def test_the_readme_runs_as_written(vnet_bin, tmp_path):
    for tool in ("ip", "busybox", "nft"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is missing")
    openstack = Path(sys.executable).parent / "openstack"
    if not openstack.exists():
        pytest.skip("the openstack CLI is not in this venv")
    name = f"rd{os.getpid() % 100000}"
    port = free_port()
    blocks, _ = readme_blocks((REPO_ROOT / "README.md").read_text())

    def own(block: str) -> str:
        block = block.replace("127.0.0.1:9696", f"127.0.0.1:{port}")
        block = re.sub(r"\blab-h(\d)", rf"{name}-h\1", block)
        return block

    script = "set -e\n" + "\n".join(own(b) for b in blocks) + "\n"
    (tmp_path / "readme.sh").write_text(script)
    env = dict(os.environ)
    env.update(
        VNET_LAB=name,
        VNET_LAB_LISTEN=f"127.0.0.1:{port}",
        PATH=f"{tmp_path}:{openstack.parent}:{env.get('PATH', '')}",
    )
    for key in [k for k in env if k.startswith("OS_")]:
        del env[key]
    (tmp_path / "vnet").symlink_to(vnet_bin)
    log_path = tmp_path / "readme.log"
    try:
        # Output to a file, not a pipe: a command left in the background
        # (the README's listener) must not keep the test waiting.
        with open(log_path, "w") as log:
            result = subprocess.run(
                ["bash", "-x", str(tmp_path / "readme.sh")],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=600,
                check=False,
            )
        output = log_path.read_text()
        assert result.returncode == 0, f"the README's commands failed:\n{output[-6000:]}"
        # The walkthrough's facts, as its comments state them.
        assert re.search(r"vm1: lease 10\.0\.0\.\d+/24 router=10\.0\.0\.1 mtu=1450", output), output[-3000:]
        assert "hello from vm2" in output, output[-3000:]
        # The dual-stack VM holds its SLAAC address (and pinged its peer).
        assert re.search(r"vm3: ipv6 fd00:6::[0-9a-f:]+/64 \(slaac\)", output), output[-3000:]
        assert f"lab '{name}' is down" in output, output[-3000:]
    finally:
        if Path("/run/vnet-lab", name).exists():
            subprocess.run([str(vnet_bin), "lab", "down", "--name", name], check=False)
        shutil.rmtree(Path("/run/vnet-lab-logs", name), ignore_errors=True)
    leftovers = [ns for ns in os.listdir("/run/netns") if ns.startswith(f"{name}-")] if os.path.isdir("/run/netns") else []
    assert leftovers == [], leftovers
