"""``bastion node serve``: run a model server on this machine and announce it over mDNS.

The server is llama-cpp-python's OpenAI-compatible ``python -m llama_cpp.server`` on the
shipped model (or a configured GGUF), started as a child process that dies with us
(``PR_SET_PDEATHSIG``). It answers the router's health checks (``/health``, ``/v1/models``)
and chat completions itself; this process supervises it and owns the mDNS registration.

Supervision: a child that dies (segfault, abort, out-of-memory kill) is reported on stderr
(``error: the model server crashed (signal 11, SIGSEGV)``) and started again at once; three
crashes within a minute end ``node serve`` with one clear error (exit status 1) instead of a
crash loop. The requests in flight at the crash fail; the router's retry and breaker take
them elsewhere.

It binds 127.0.0.1 unless told otherwise, and any other bind needs an API key. The key
reaches the server child through its environment (``API_KEY``, which llama-cpp-python's
settings read), never its command line: ``/proc/*/cmdline`` is readable by every local user.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bastion._net import is_loopback
from bastion._proc import CRASH_LIMIT, CRASH_WINDOW_S, CrashLoop, describe_exit, die_with_parent
from bastion.cluster.discovery import SERVICE_TYPE, Announcement, Announcer, local_addresses
from bastion.errors import ClusterError
from bastion.hardware.memory import OOM_KILLED, OomWatch
from bastion.llm import native_build


@dataclass(slots=True)
class ServeOptions:
    """How to run and announce the node."""

    model_path: Path
    name: str
    model_alias: str = "smollm2-135m"
    host: str = "127.0.0.1"
    port: int = 8080
    n_ctx: int = 2048
    n_threads: int | None = None
    tier: str = "small"
    advertise: list[str] = field(default_factory=list)  # addresses to announce; default: all
    ttl_s: int = 30
    announce: bool = True
    api_key: str | None = None  # from BASTION_NODE_API_KEY or --api-key-file, never argv
    tls_cert: Path | None = None
    tls_key: Path | None = None
    service_type: str = SERVICE_TYPE
    start_timeout_s: float = 120.0
    verbose: bool = False  # llama.cpp's load and per-request debug output (~2,000 lines)


MIN_KEY_CHARS = 32


def check_exposure(opts: ServeOptions) -> None:
    """Refuse a bind other machines can reach without an API key (or with a short one)."""
    if is_loopback(opts.host):
        return
    key = opts.api_key or ""
    if len(key) < MIN_KEY_CHARS:
        what = "without an API key" if not key else f"with a {len(key)}-character API key"
        raise ClusterError(
            f"node serve on {opts.host} would be reachable from other machines {what}",
            fix=f"put a key of {MIN_KEY_CHARS}+ characters in BASTION_NODE_API_KEY or a file "
                "(--api-key-file PATH, mode 0600), or bind --host 127.0.0.1",
        )


def server_argv(opts: ServeOptions) -> list[str]:
    """Return the command line of the model server."""
    argv = [
        # llama_cpp.server with bastion's repack choice (bastion.llm.repack: probed on AMX CPUs)
        sys.executable, "-m", "bastion.llm.server_main",
        "--model", str(opts.model_path),
        "--host", opts.host, "--port", str(opts.port),
        "--n_ctx", str(opts.n_ctx),
        "--model_alias", opts.model_alias,
        # queue concurrent requests instead of cutting the running one short
        "--interrupt_requests", "false",
        "--verbose", "true" if opts.verbose else "false",
    ]  # fmt: skip
    if opts.n_threads:
        argv += ["--n_threads", str(opts.n_threads)]
    if opts.tls_cert is not None and opts.tls_key is not None:
        argv += ["--ssl_certfile", str(opts.tls_cert), "--ssl_keyfile", str(opts.tls_key)]
    return argv  # never the API key: see server_env


def server_env(opts: ServeOptions) -> dict[str, str]:
    """Return the model server's environment: ours, plus ``API_KEY`` when a key is set."""
    env = {k: v for k, v in os.environ.items() if k not in ("API_KEY", "BASTION_NODE_API_KEY")}
    if opts.api_key:
        env["API_KEY"] = opts.api_key
    return env


class NodeServer:
    """Runs the model server child, waits for it, announces it, and cleans up."""

    def __init__(self, opts: ServeOptions) -> None:
        self.opts = opts
        self.proc: subprocess.Popen[bytes] | None = None
        self.oom = OomWatch()  # renewed by each _spawn
        self.announcer: Announcer | None = None
        self.crashes = CrashLoop(CRASH_LIMIT, CRASH_WINDOW_S)
        self.restarts = 0

    @property
    def tls(self) -> bool:
        """Whether the server speaks https."""
        return self.opts.tls_cert is not None and self.opts.tls_key is not None

    @property
    def local_url(self) -> str:
        """Where this machine reaches the server."""
        host = "127.0.0.1" if self.opts.host in ("0.0.0.0", "") else self.opts.host
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls else 'http'}://{host}:{self.opts.port}"

    @property
    def announces(self) -> bool:
        """Whether to announce: asked to, and reachable by others (or --advertise given)."""
        return self.opts.announce and (bool(self.opts.advertise) or not is_loopback(self.opts.host))

    def addresses(self) -> list[str]:
        """Return the addresses to announce."""
        if self.opts.advertise:
            return list(self.opts.advertise)
        if self.opts.host not in ("0.0.0.0", ""):
            return [self.opts.host]
        return local_addresses()

    async def start(self) -> None:
        """Start the server and wait until it answers; then announce it."""
        check_exposure(self.opts)
        # a build for another CPU: one line now, not a SIGILL loop (and one that does not load)
        native_build.import_checked("llama_cpp.server", feature="bastion node serve")
        if not self.opts.model_path.is_file():
            raise ClusterError(
                f"model file not found: {self.opts.model_path}",
                fix="pass --model PATH to a .gguf file, or omit it for the shipped model",
            )
        self._plan_context()
        self._spawn()
        await self._wait_ready()
        if self.announces:
            addrs = self.addresses()
            if not addrs:
                raise ClusterError(
                    "no network address to announce", fix="pass --advertise IP or --host IP"
                )
            self.announcer = Announcer(
                Announcement(
                    name=self.opts.name,
                    port=self.opts.port,
                    addresses=tuple(addrs),
                    engine="llama_cpp",
                    tier=self.opts.tier,
                    models=(self.opts.model_alias,),
                    max_context=self.opts.n_ctx,
                    ttl_s=self.opts.ttl_s,
                    tls=self.tls,
                ),
                self.opts.service_type,
            )
            await self.announcer.start()

    def _plan_context(self) -> None:
        """Lower --n-ctx to the model's trained context; refuse one that cannot fit in memory.

        The same plan as the embedded model's (:mod:`bastion.llm.footprint`), for one server
        with one context, from the file's metadata (a vocabulary-only load, no weights).
        """
        from bastion.llm.embedded import load_vocab
        from bastion.llm.server_main import choose_repack
        from bastion.llm.worker import plan_memory

        repack = choose_repack()
        vocab = load_vocab(self.opts.model_path)
        fit = plan_memory(vocab, self.opts.model_path, n_ctx=self.opts.n_ctx, slots=1,
                          workers=1, repack=repack, settings={"n_ctx": "--n-ctx {}"})
        for note in fit.notes:
            _say(f"note: {note.text}")
        self.opts.n_ctx = fit.n_ctx

    def _spawn(self) -> None:
        self.oom = OomWatch()
        self.proc = subprocess.Popen(  # noqa: S603 - fixed argv, our own interpreter
            server_argv(self.opts), env=server_env(self.opts),
            preexec_fn=functools.partial(die_with_parent, signal.SIGTERM, os.getpid()))

    async def _restart(self, returncode: int) -> bool:
        """Report a crash and start the server again; False once it crashes in a loop."""
        looping = self.crashes.record()
        ill = f" (fix: {native_build.SIGILL_FIX})" if returncode == -signal.SIGILL else ""
        if self.oom.killed(returncode):
            _say(f"error: the model server was killed for lack of memory "
                 f"({describe_exit(returncode)}, {OOM_KILLED}); requests in flight were lost "
                 "(fix: free memory, or a smaller --n-ctx or --model)")
        else:
            _say(f"error: the model server crashed ({describe_exit(returncode)}); requests in "
                 f"flight were lost{ill}")
        if looping:
            _say(f"error: the model server crashed {self.crashes.count} times within "
                 f"{CRASH_WINDOW_S:.0f} s; not restarting it again (fix: run `bastion doctor` "
                 "to test the model in a child process, try another --model or fewer --threads, "
                 "then start node serve again)")
            return False
        _say(f"restarting the model server (crash {self.crashes.count} of {CRASH_LIMIT} "
             f"allowed within {CRASH_WINDOW_S:.0f} s)")
        while True:
            self._spawn()
            try:
                await self._wait_ready()
            except ClusterError as exc:
                assert self.proc is not None
                if self.proc.poll() is None:  # it did not come up in time: stop it, count it
                    self.proc.kill()
                    await asyncio.to_thread(self.proc.wait)
                looping = self.crashes.record()
                _say(f"error: the restarted model server failed: {exc.message}")
                if looping:
                    _say("error: giving up after repeated failures (fix: "
                         f"{exc.fix or 'run `bastion doctor`'})")
                    return False
                continue
            self.restarts += 1
            _say(f"the model server is back at {self.local_url}/v1")
            return True

    async def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.opts.start_timeout_s
        # our own child on this machine: its certificate may be for the LAN name only
        async with httpx.AsyncClient(timeout=2.0, verify=not self.tls) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise ClusterError(
                        f"the model server exited with code {self.proc.returncode}",
                        fix="check the port is free and the model file is a valid GGUF",
                    )
                with contextlib.suppress(httpx.HTTPError):
                    resp = await client.get(self.local_url + "/v1/models")
                    if resp.status_code < 500:
                        return
                await asyncio.sleep(0.2)
        raise ClusterError(
            f"the model server did not answer within {self.opts.start_timeout_s:.0f} s",
            fix="check the server output above",
        )

    async def wait(self) -> int:
        """Supervise the child until SIGTERM/SIGINT; return an exit code.

        A child that dies is restarted (see the module text); a crash loop returns 1.
        """
        assert self.proc is not None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        while not stop.is_set():
            proc = self.proc
            assert proc is not None
            if proc.poll() is not None:
                if not await self._restart(proc.returncode):
                    return 1
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.25):
                    await stop.wait()
        return 0

    async def close(self) -> None:
        """Say goodbye on mDNS, then stop the server."""
        if self.announcer is not None:
            await self.announcer.close()
            self.announcer = None
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait, 10)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def serve(opts: ServeOptions) -> int:
    """Run a node until stopped; return the process exit code."""
    node = NodeServer(opts)
    try:
        await node.start()
        print(
            f"node {opts.name} serving {opts.model_path.name} at {node.local_url}/v1"
            + (f", announced as {', '.join(node.addresses())} over mDNS" if node.announces
               else " (not announced: loopback only)" if opts.announce else ""),
            flush=True,
        )
        return await node.wait()
    finally:
        await node.close()
