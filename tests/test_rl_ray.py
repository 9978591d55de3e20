"""init_ray: a local Ray node that listens on loopback only."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import psutil
import pytest
import ray

from gea.rl.ray_init import init_ray

_SOCKET_LINE = re.compile(r"^\S+\s+\S+\s+\d+\s+\d+\s+(?P<local>\S+)\s+\S+.*?(?P<users>users:\(.*\))?$")
_PID = re.compile(r"pid=(\d+)")
LOOPBACK_PREFIXES = ("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")


def listening_addresses(pids: set[int]) -> list[tuple[str, str]]:
    """Return (local address, ss process field) of TCP and UDP listeners owned by `pids`."""
    output = subprocess.run(["ss", "-ltunpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in output.splitlines():
        match = _SOCKET_LINE.match(line.strip())
        if not match or not match.group("users"):
            continue
        owners = {int(pid) for pid in _PID.findall(match.group("users"))}
        if owners & pids:
            found.append((match.group("local"), match.group("users")))
    return found


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs the ss tool from iproute2")
def test_ray_listens_on_loopback_only():
    init_ray(num_cpus=1)
    try:
        # Start a worker process too, so its server is part of the check.
        assert ray.get(ray.remote(lambda: 1).remote()) == 1
        ours = {os.getpid()} | {child.pid for child in psutil.Process().children(recursive=True)}
        addresses = listening_addresses(ours)
    finally:
        ray.shutdown()
    assert addresses, "found no listening socket of Ray's processes; the check cannot see them"
    exposed = [(address, users) for address, users in addresses if not address.startswith(LOOPBACK_PREFIXES)]
    assert exposed == []


def test_init_ray_rejects_remote_address():
    with pytest.raises(ValueError, match="address"):
        init_ray(num_cpus=1, address="10.0.0.1:6379")


def test_init_ray_rejects_zero_cpus():
    with pytest.raises(ValueError, match="num_cpus"):
        init_ray(num_cpus=0)
