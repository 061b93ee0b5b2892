"""kill -9 during a stream of creates loses nothing acknowledged and leaves
nothing half-written.

Several client threads create ports (singly and in bulk) and networks with
subnets. Once enough creates have been acknowledged (201) the server gets
SIGKILL while requests are still in flight; it is restarted on the same data
dir and every acknowledged resource must be there, unchanged, and the store
must be consistent. Repeated over several rounds on the same data dir.
"""

from __future__ import annotations

import ipaddress
import threading
from collections import Counter, defaultdict

import requests

from helpers import describe, expect, expect_error

ROUNDS = 4
PORT_WRITERS = 3
ACKS_BEFORE_KILL = 150  # acknowledged creates per round before the kill
BULK = 3
CIDR = "10.200.0.0/16"


class Stream:
    """Client threads creating resources until the server goes away."""

    def __init__(self, url: str, net_id: str, round_no: int):
        self.url = url
        self.net_id = net_id
        self.round = round_no
        self.lock = threading.Condition()
        self.acks = 0
        self.ports: dict[str, dict] = {}  # id -> port as acknowledged
        self.bulks: list[list[dict]] = []  # acknowledged bulk creates
        self.bulk_names: list[list[str]] = []  # every bulk create attempted
        self.networks: dict[str, dict] = {}
        self.subnets: dict[str, dict] = {}
        self.unexpected: list[str] = []
        self.threads: list[threading.Thread] = []

    def _ack(self):
        with self.lock:
            self.acks += 1
            self.lock.notify_all()

    def _loop(self, step):
        s = requests.Session()
        i = 0
        while True:
            i += 1
            try:
                if not step(s, i):
                    return
            except requests.RequestException:
                return  # the server was killed
            if i > 5000:  # bounded, whatever happens
                return

    def _post(self, s, path, body):
        resp = s.post(self.url + path, json=body, timeout=30)
        if resp.status_code != 201:
            with self.lock:
                self.unexpected.append(describe(resp))
            return None
        return resp.json()

    def _single_port(self, k):
        def step(s, i):
            body = self._post(
                s, "/v2.0/ports", {"port": {"network_id": self.net_id, "name": f"r{self.round}-w{k}-{i}"}}
            )
            if body is None:
                return False
            with self.lock:
                self.ports[body["port"]["id"]] = body["port"]
            self._ack()
            return True

        return step

    def _bulk_ports(self, s, i):
        names = [f"r{self.round}-bulk{i}-{j}" for j in range(BULK)]
        with self.lock:
            self.bulk_names.append(names)
        body = self._post(
            s, "/v2.0/ports", {"ports": [{"network_id": self.net_id, "name": n} for n in names]}
        )
        if body is None:
            return False
        with self.lock:
            self.bulks.append(body["ports"])
            for p in body["ports"]:
                self.ports[p["id"]] = p
        self._ack()
        return True

    def _network_and_subnet(self, s, i):
        body = self._post(s, "/v2.0/networks", {"network": {"name": f"r{self.round}-net{i}"}})
        if body is None:
            return False
        net = body["network"]
        with self.lock:
            self.networks[net["id"]] = net
        self._ack()
        cidr = f"172.{16 + self.round}.{i % 256}.0/24"
        body = self._post(
            s, "/v2.0/subnets", {"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": cidr}}
        )
        if body is None:
            return False
        with self.lock:
            self.subnets[body["subnet"]["id"]] = body["subnet"]
        self._ack()
        return True

    def start(self):
        steps = [self._single_port(k) for k in range(PORT_WRITERS)]
        steps += [self._bulk_ports, self._network_and_subnet]
        self.threads = [threading.Thread(target=self._loop, args=(st,), daemon=True) for st in steps]
        for t in self.threads:
            t.start()

    def wait_for_acks(self, n: int, timeout: float) -> bool:
        with self.lock:
            return self.lock.wait_for(lambda: self.acks >= n or self.unexpected, timeout=timeout)

    def join(self):
        for t in self.threads:
            t.join(timeout=60)
            assert not t.is_alive(), "a client thread did not stop after the kill"


def check_consistent(api, net_id: str, sub: dict, acked_ports: dict, bulk_names, networks, subnets):
    cidr = ipaddress.ip_network(sub["cidr"])
    ports = api.list("ports", {"network_id": net_id})
    by_id = {p["id"]: p for p in ports}
    assert len(by_id) == len(ports), "a port is listed twice"

    # Everything acknowledged survived, unchanged.
    lost = [pid for pid in acked_ports if pid not in by_id]
    assert not lost, f"{len(lost)} acknowledged ports lost, e.g. {lost[:3]}"
    for pid, want in acked_ports.items():
        got = by_id[pid]
        for key in ("mac_address", "fixed_ips", "name", "network_id", "security_groups"):
            assert got[key] == want[key], f"port {pid} {key}: {got[key]} != acknowledged {want[key]}"

    # Nothing half-written: every port has its address, no address or MAC twice.
    for p in ports:
        assert len(p["fixed_ips"]) == 1, f"port without its address: {p}"
        fip = p["fixed_ips"][0]
        assert fip["subnet_id"] == sub["id"]
        assert ipaddress.ip_address(fip["ip_address"]) in cidr
        assert fip["ip_address"] != sub["gateway_ip"]
        assert p["mac_address"], p
        assert len(p["security_groups"]) == 1, p
    dup_ips = [ip for ip, n in Counter(p["fixed_ips"][0]["ip_address"] for p in ports).items() if n > 1]
    assert not dup_ips, f"addresses allocated twice: {dup_ips}"
    dup_macs = [m for m, n in Counter(p["mac_address"] for p in ports).items() if n > 1]
    assert not dup_macs, f"MACs allocated twice: {dup_macs}"
    # Listing and show agree.
    for p in ports[:: max(1, len(ports) // 20)]:
        assert api.show("ports", p["id"]) == p

    # A bulk create is all or nothing.
    names = Counter(p["name"] for p in ports)
    for group in bulk_names:
        present = [names[n] for n in group]
        assert present in ([0] * len(group), [1] * len(group)), f"half a bulk create survived: {group} {present}"

    # Networks and subnets agree with each other.
    all_nets = {n["id"]: n for n in api.list("networks")}
    all_subs = {s["id"]: s for s in api.list("subnets")}
    assert set(networks) <= set(all_nets), "acknowledged networks lost"
    assert set(subnets) <= set(all_subs), "acknowledged subnets lost"
    by_net = defaultdict(set)
    for s in all_subs.values():
        assert s["network_id"] in all_nets, f"subnet {s['id']} of a missing network"
        by_net[s["network_id"]].add(s["id"])
    for n in all_nets.values():
        assert set(n["subnets"]) == by_net[n["id"]], f"network {n['id']} subnets {n['subnets']} != {by_net[n['id']]}"
    for sid, s in subnets.items():
        assert all_subs[sid]["cidr"] == s["cidr"]


def test_kill9_during_creates_loses_nothing(fresh_server):
    srv = fresh_server
    api = srv.api()
    net, sub = api.network_with_subnet(CIDR)
    # More ports than a project's default quota: lifted as an operator would.
    expect(api.put(f"/v2.0/quotas/{net['project_id']}", {"quota": {"port": -1}}), 200)
    acked_ports: dict[str, dict] = {}
    bulk_names: list[list[str]] = []
    networks: dict[str, dict] = {net["id"]: net}
    subnets: dict[str, dict] = {sub["id"]: sub}

    for round_no in range(ROUNDS):
        stream = Stream(srv.url, net["id"], round_no)
        stream.start()
        reached = stream.wait_for_acks(ACKS_BEFORE_KILL, timeout=120)
        srv.kill9()  # with requests still in flight
        stream.join()
        assert not stream.unexpected, f"unexpected answers: {stream.unexpected[:3]}"
        assert reached, f"only {stream.acks} creates acknowledged in 120 s"
        acked_ports.update(stream.ports)
        bulk_names += stream.bulk_names
        networks.update(stream.networks)
        subnets.update(stream.subnets)

        srv.start()  # same data dir
        api = srv.api()
        check_consistent(api, net["id"], sub, acked_ports, bulk_names, networks, subnets)

        # The allocator knows what is taken: no acknowledged address is handed out again.
        taken = {p["fixed_ips"][0]["ip_address"] for p in api.list("ports", {"network_id": net["id"]})}
        fresh = api.port(net["id"])
        assert fresh["fixed_ips"][0]["ip_address"] not in taken
        some = next(iter(acked_ports.values()))
        resp = api.post(
            "/v2.0/ports", {"port": {"network_id": net["id"], "fixed_ips": some["fixed_ips"]}}
        )
        expect_error(resp, 409, "IpAddressAlreadyAllocated")

    # Still a working server: a clean shutdown and restart keeps everything too.
    srv.stop()
    srv.start()
    api = srv.api()
    check_consistent(api, net["id"], sub, acked_ports, bulk_names, networks, subnets)
    expect(api.get("/"), 200)
