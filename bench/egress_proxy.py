"""What bastion's egress proxy (credential swap + inspection) adds, against direct HTTPS.

    sudo python bench/egress_proxy.py [--requests 300] [--mb 10]

Runs as root in namespaces it makes (the private internet of
``tests/security/_world.py``: a real HTTPS server with its own CA). bastion's egress
namespace is started with its proxy (a bound secret for ``api.test``), and one client inside
that namespace measures, alternating direct and proxied so load drifts hit both alike:

1. latency of one HTTPS GET on a kept-alive connection (direct to the server vs through the
   proxy, the placeholder in ``Authorization`` swapped on every request): p50/p99 and the
   added p50;
2. a ``--mb`` MB download, ``--rounds`` times per path: throughput direct vs through the
   proxy, best of each and the median of the paired rounds, and the proxy thread's own CPU
   per MB carried (its thread clock, so it holds on a loaded machine);
3. the same download through socat and haproxy (where installed: C with OpenSSL), each
   terminating TLS with its own certificate and re-originating it to the server, nothing
   inspected: the peer baseline, i.e. what a native TLS-intercepting relay reaches on these
   cores, and the proxy's throughput as a ratio of theirs.

Targets (issue 18): added p50 <= 2 ms per request; proxied throughput >= 0.8x direct.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

CLIENT = r"""
import http.client, json, os, ssl, statistics, sys, time
proxy_port, ca, proxy_ca, token, n, size, rounds, server_pid, relays, relay_ca = sys.argv[1:11]
relays = json.loads(relays)  # native TLS-terminating relays beside the proxy: name -> port
server_pid = int(server_pid)
n, size, rounds = int(n), int(size), int(rounds)
direct_ctx = ssl.create_default_context(cafile=ca)
proxy_ctx = ssl.create_default_context(cafile=proxy_ca)
relay_ctx = ssl.create_default_context(cafile=relay_ca) if relay_ca != "-" else None
PATHS = (False, True) + tuple(relays)

def conn(proxied):
    if proxied in relays:  # a native TLS-terminating relay (socat, haproxy): the floor
        return http.client.HTTPSConnection("relay.test", relays[proxied], context=relay_ctx,
                                           timeout=60)
    if proxied:
        c = http.client.HTTPSConnection("127.0.0.1", int(proxy_port), context=proxy_ctx,
                                        timeout=60)
        c.set_tunnel("api.test", 443)
    else:
        c = http.client.HTTPSConnection("api.test", 443, context=direct_ctx, timeout=60)
    return c

def get(c, path, auth, keep=None):
    c.request("GET", path, headers={"Authorization": auth} if auth else {})
    r = c.getresponse()
    body = r.read()
    assert r.status == 200, r.status
    if keep is not None:
        keep.append(body)
    return len(body)

def stat_cpu(pid):  # utime + stime of a process, seconds
    if not pid:
        return 0.0
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

out = {}
cs = {False: conn(False), True: conn(True)}
for p in (False, True):  # handshakes and first requests outside the timing
    get(cs[p], "/warm", "Bearer " + token)
lat = {False: [], True: []}
for _ in range(n):
    for p in (False, True):
        t = time.perf_counter()
        get(cs[p], "/echo", "Bearer " + token)
        lat[p].append((time.perf_counter() - t) * 1000)
for p, name in ((False, "direct"), (True, "proxied")):
    xs = sorted(lat[p]) or [0.0]
    out[name] = {"p50": statistics.median(xs), "p99": xs[max(int(len(xs) * 0.99) - 1, 0)]}
thr = {p: [] for p in PATHS}
cpu = {(p, who): 0.0 for p in PATHS for who in ("client", "server")}
bodies = {p: [] for p in PATHS}
for i in range(rounds if size else 0):
    for p in PATHS:
        c = conn(p)
        get(c, "/warm", None)
        t, tc, ts = time.perf_counter(), time.thread_time(), stat_cpu(server_pid)
        got = get(c, f"/big?n={size}", None, bodies[p] if i == 0 else None)
        thr[p].append(got / (time.perf_counter() - t) / 1e6)
        cpu[p, "client"] += time.thread_time() - tc
        cpu[p, "server"] += stat_cpu(server_pid) - ts
        c.close()
NAMES = {False: "direct", True: "proxied", **{r: r for r in relays}}
if size:
    # every path delivered the same bytes (the body differs every 64 KiB)
    assert all(bodies[p] == bodies[False] for p in PATHS), "a relayed body differs"
    mb = rounds * size / 1e6
    out["mb_s"] = {NAMES[p]: max(thr[p]) for p in PATHS}
    out["mb_s"]["paired"] = statistics.median(b / a for a, b in zip(thr[False], thr[True]))
    for r in relays:
        out["mb_s"][r + "_paired"] = statistics.median(
            b / a for a, b in zip(thr[False], thr[r]))
    out["mb_s"]["cpu_ms_per_mb"] = {NAMES[p] + " " + who: v / mb * 1000
                                    for (p, who), v in cpu.items()}
print(json.dumps(out))
"""


def measure(directory: Path, requests: int, megabytes: int, rounds: int, server_pid: int
            ) -> dict[str, object]:
    """Run inside the stand-in host namespace: bastion's egress network and the client."""
    from bastion.security.egress.credproxy import CredentialProxy, ProxyPolicy
    from bastion.security.egress.netns import EgressNetwork
    from bastion.security.egress.rules import TABLE, EgressRule
    from bastion.security.egress.uplink import HostUplinkSpec
    from bastion.security.scanner import SecretScanner
    from bastion.security.secrets.bound import Binding, PlaceholderBook

    token = "ghp_" + "b" * 36
    book = PlaceholderBook()
    placeholder = book.issue(Binding("bench", "GH_TOKEN", "secret://env/gh",
                                     (("api.test", 443),), "Authorization"), token)
    rule = EgressRule.create(["api.test"], [], [443], name="bench")
    proxy = CredentialProxy("bench", ProxyPolicy(rule), book, scanner=SecretScanner([token]))
    net = EgressNetwork(rule, HostUplinkSpec(dns=("10.200.0.53",)), subject="bench",
                        proxy=proxy).start()
    with contextlib.ExitStack() as stack:
        stack.callback(net.close)
        # the direct path, for comparison only: let the client reach the server itself
        subprocess.run(["ip", "netns", "exec", net.name, "nft", "insert", "rule", "inet", TABLE,
                        "out", "ip", "daddr", "93.184.215.20", "tcp", "dport", "443", "accept"],
                       check=True)
        hosts = directory / "hosts"
        hosts.write_text("93.184.215.20 api.test\n127.0.0.1 relay.test\n")
        relays, relay_ca = _start_relays(directory, net.netns_path, stack)

        def client(n: int, size: int) -> dict[str, Any]:
            proc = subprocess.run(
                ["unshare", "--mount", "--", "sh", "-c",
                 f"mount --bind {hosts} /etc/hosts && exec nsenter --net={net.netns_path} -- "
                 f"{sys.executable} -c \"$CLIENT\" {proxy.port} {directory / 'ca.pem'} "
                 f"{proxy.ca_file} {placeholder} {n} {size} {rounds} {server_pid} "
                 f"'{json.dumps(relays)}' {relay_ca or '-'}"],
                env={**os.environ, "CLIENT": CLIENT}, capture_output=True, text=True,
                timeout=900)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr[-3000:])
            out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
            return out

        clock = time.pthread_getcpuclockid(proxy.thread_id)
        cpu = time.clock_gettime(clock)
        result = client(requests, 0)  # latency
        result["proxy_ms_per_request"] = (time.clock_gettime(clock) - cpu) * 1000 / requests
        cpu = time.clock_gettime(clock)
        client(0, 1)  # the same connections and warm-ups with a 1-byte body
        setup = time.clock_gettime(clock) - cpu
        cpu = time.clock_gettime(clock)
        result["mb_s"] = client(0, megabytes * 1_000_000)["mb_s"]  # throughput
        # the proxy's own CPU for what it carried (rounds x the download; the connections'
        # set-up, measured alike with a 1-byte body, taken off): how fast it could go on
        # an idle core, whatever the load on the machine
        result["proxy_mb_per_cpu_s"] = (rounds * megabytes) / (
            time.clock_gettime(clock) - cpu - setup)
        result["proxy_ms_per_connection"] = setup * 1000 / rounds
        swaps = sum(1 for e in proxy.events if e["kind"] == "secret_swap")
        result["swaps"] = swaps
        result["connects"] = proxy.connects
        return result


def _start_relays(directory: Path, netns: str, stack: contextlib.ExitStack
                  ) -> tuple[dict[str, int], Path | None]:
    """Start native TLS-terminating relays beside the proxy: those installed of socat, haproxy.

    Each has the same two TLS legs as the proxy (its own certificate towards the client, the
    API's certificate verified towards the server) in C with OpenSSL: socat relays bytes
    (no HTTP at all), haproxy parses HTTP (``mode http``) like the proxy but inspects nothing.
    What they reach is the floor a TLS-intercepting relay has on this machine's cores.
    Returns {name: port} of those started and the CA that signed their certificate.
    """
    import shutil

    from tests.security._world import make_ca

    wanted = [r for r in ("socat", "haproxy") if shutil.which(r)]
    if not wanted:
        return {}, None
    (directory / "relay").mkdir(exist_ok=True)
    ca, leaf, key = make_ca(directory / "relay", ["relay.test"])
    api = "93.184.215.20:443"
    argv = {"socat": ["socat", "-b", "262144",
                      f"OPENSSL-LISTEN:8443,bind=127.0.0.1,reuseaddr,fork,cert={leaf},"
                      f"key={key},verify=0",
                      f"OPENSSL:{api},cafile={directory / 'ca.pem'},commonname=api.test,"
                      "snihost=api.test"]}
    if "haproxy" in wanted:
        pem = directory / "relay" / "haproxy.pem"
        pem.write_bytes(leaf.read_bytes() + key.read_bytes())
        cfg = directory / "relay" / "haproxy.cfg"
        cfg.write_text(
            "global\n  maxconn 64\n  nbthread 1\n"
            "defaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n"
            "  timeout server 60s\n"
            f"frontend relay\n  bind 127.0.0.1:8444 ssl crt {pem}\n  default_backend api\n"
            f"backend api\n  server api {api} ssl verify required ca-file "
            f"{directory / 'ca.pem'} sni str(api.test) verifyhost api.test\n")
        argv["haproxy"] = ["haproxy", "-db", "-f", str(cfg)]
    ports = {"socat": 8443, "haproxy": 8444}
    for name in wanted:
        proc = subprocess.Popen(["nsenter", f"--net={netns}", "--", *argv[name]],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stack.callback(_stop, proc)
    want = {f"127.0.0.1:{ports[name]}" for name in wanted}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until every relay listens (ss inside the namespace)
        listening = subprocess.run(["nsenter", f"--net={netns}", "--", "ss", "-Hltn"],
                                   capture_output=True, text=True).stdout
        if all(addr in listening for addr in want):
            break
        time.sleep(0.05)
    else:
        raise SystemExit(f"a relay did not start listening: {sorted(want)}")
    return {name: ports[name] for name in wanted}, ca


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


def _server_pid(world: str) -> int:
    """Return the pid of the world's HTTPS server (its CPU per MB is printed), 0 if unknown."""
    pids = subprocess.run(["ip", "netns", "pids", world], capture_output=True,
                          text=True).stdout.split()
    for pid in pids:
        with contextlib.suppress(OSError):
            if b"tls_server" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return int(pid)
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--mb", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5, help="downloads per path (alternating)")
    ap.add_argument("--inside", help=argparse.SUPPRESS)
    ap.add_argument("--server-pid", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:  # the second stage, in the stand-in host namespace
        print(json.dumps(measure(Path(args.inside), args.requests, args.mb, args.rounds,
                                 args.server_pid)))
        return
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces, nftables): sudo python "
                         "bench/egress_proxy.py")
    from tests.security._world import make_world

    print(f"load average before: {os.getloadavg()[0]:.2f}")
    with make_world(Path(tempfile.mkdtemp(prefix="bench-egress-"))) as world:
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}",
               "SSL_CERT_FILE": str(world.ca)}
        proc = subprocess.run(
            ["nsenter", f"--net=/run/netns/{world.host}", "--", sys.executable, __file__,
             "--inside", str(world.directory), "--requests", str(args.requests),
             "--mb", str(args.mb), "--rounds", str(args.rounds),
             "--server-pid", str(_server_pid(world.world))], env=env, capture_output=True,
            text=True, timeout=1200)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    d, p, mb = res["direct"], res["proxied"], res["mb_s"]
    added = p["p50"] - d["p50"]
    print(f"HTTPS GET, kept-alive, {args.requests} each (alternating):")
    print(f"  direct   p50 {d['p50']:.2f} ms  p99 {d['p99']:.2f} ms")
    print(f"  proxied  p50 {p['p50']:.2f} ms  p99 {p['p99']:.2f} ms   ({res['swaps']} swaps, "
          f"{res['connects']} upstream connections)")
    print(f"  added p50 {added:.2f} ms (target <= 2 ms: {'ok' if added <= 2 else 'MISSED'}); "
          f"ratio {p['p50'] / d['p50']:.2f}x")
    ratio = mb["proxied"] / mb["direct"]
    print(f"{args.mb} MB download, best of {args.rounds}: direct {mb['direct']:.1f} MB/s, "
          f"proxied {mb['proxied']:.1f} MB/s, ratio {ratio:.2f}x "
          f"(target >= 0.8x: {'ok' if ratio >= 0.8 else 'MISSED'}); median of the paired "
          f"rounds {mb['paired']:.2f}x")
    for r in ("socat", "haproxy"):  # the native floor: TLS in and out in C, no inspection
        if r in mb:
            print(f"  {r} (C, OpenSSL: TLS terminated and re-originated, nothing inspected) in "
                  f"the same run: {mb[r]:.1f} MB/s, {mb[r] / mb['direct']:.2f}x direct "
                  f"(median of paired rounds {mb[r + '_paired']:.2f}x); bastion's proxy "
                  f"{mb['proxied'] / mb[r]:.2f}x {r}")
    print(f"  the proxy's own CPU: {res['proxy_mb_per_cpu_s']:.0f} MB per CPU-second (its "
          "thread's clock: what it could carry on an idle core); "
          f"{res['proxy_ms_per_request']:.2f} ms per kept-alive request, "
          f"{res['proxy_ms_per_connection']:.1f} ms per new connection (CONNECT, both TLS "
          "handshakes)")
    cpu = mb["cpu_ms_per_mb"]
    print("  CPU ms per MB: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
          + f", proxy {1000 / res['proxy_mb_per_cpu_s']:.2f}")
    # what the same work could reach if every stage had its own core: the slowest stage
    # bounds each path; on this machine's cores the sum of the stages bounds it as well
    direct = [cpu["direct client"], cpu["direct server"]]
    proxied = [cpu["proxied client"], cpu["proxied server"], 1000 / res["proxy_mb_per_cpu_s"]]
    cores = os.cpu_count() or 1
    for name, n in (("a core per stage", 99), (f"{cores} cores", cores)):
        bound = [1000 / max(max(xs), sum(xs) / min(n, len(xs))) for xs in (direct, proxied)]
        print(f"  CPU bound with {name}: direct {bound[0]:.0f} MB/s, proxied {bound[1]:.0f} "
              f"MB/s, ratio {bound[1] / bound[0]:.2f}x")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
