"""Private sum across three separate processes talking over loopback (real sockets).

Party 0 is the real ``bastion crypto mpc-sum`` command; parties 1 and 2 are forked processes
running the same protocol (a fork starts in milliseconds, a CLI in seconds here).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from bastion.crypto.mpc import Party, Peer, load_or_create_key, private_sum
from bastion.errors import CryptoError


def _ports(n: int) -> list[int]:
    out = []
    for _ in range(n):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            out.append(s.getsockname()[1])
    return out


def _party(me: Party, peers: list[Peer], value: int, timeout: float, q: Any) -> None:
    try:
        q.put((me.pid, asyncio.run(private_sum(me, peers, value, "t1", timeout_s=timeout))))
    except CryptoError as exc:
        q.put((me.pid, exc.message))


def _run(tmp: Path, values: list[int], *, bad_key_for: int | None = None,
         timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], dict[int, Any]]:
    ports = _ports(len(values))
    parties = [Party(i, "127.0.0.1", ports[i], load_or_create_key(tmp / f"p{i}.key"))
               for i in range(len(values))]
    pubs = [p.public_key() for p in parties]
    seen0 = list(pubs)
    if bad_key_for is not None:  # party 0 holds a wrong public key for this party
        seen0[bad_key_for] = Party(9, "h", 1, os.urandom(32)).public_key()
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = []
    for me in parties[1:]:
        peers = [Peer(p.pid, p.host, p.port, pubs[p.pid]) for p in parties if p is not me]
        proc = ctx.Process(target=_party, args=(me, peers, values[me.pid], timeout, q))
        proc.start()
        procs.append(proc)
    args = [sys.executable, "-m", "bastion", "crypto", "mpc-sum", "--party", "0",
            "--listen", f"127.0.0.1:{ports[0]}", "--session", "t1", "--value", str(values[0]),
            "--key", str(tmp / "p0.key"), "--timeout", str(timeout)]
    for p in parties[1:]:
        args += ["--peer", f"{p.pid}@127.0.0.1:{p.port}@{seen0[p.pid]}"]
    cli = subprocess.run(args, capture_output=True, text=True, timeout=90, check=False,
                         env={**os.environ, "BASTION_HOME": str(tmp)})
    results = dict(q.get(timeout=60) for _ in procs)
    for proc in procs:
        proc.join(10)
    return cli, results


def test_three_processes_learn_only_the_sum(tmp_path: Path) -> None:
    cli, others = _run(tmp_path, [5, -17, 1_000_000])
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.strip() == "sum over 3 parties: 999988"
    assert others == {1: 999988, 2: 999988}


def test_wrong_peer_key_is_detected(tmp_path: Path) -> None:
    cli, others = _run(tmp_path, [1, 2, 3], bad_key_for=2, timeout=60)
    assert cli.returncode == 1 and "Traceback" not in cli.stderr
    # the 0<->2 channel keys differ, so whichever end reads first detects it and aborts the run
    assert ("message from party 2 failed authentication" in cli.stderr
            or "party 2 aborted the run: message from party 0 failed authentication" in cli.stderr)
    assert all(isinstance(v, str) for v in others.values())  # nobody outputs a sum
    assert "aborted the run" in others[1]  # told at once, not left to time out
