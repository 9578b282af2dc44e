"""Run ``bastion.cli.main:main`` (the console script's target) once per argv.

Each run is its own forked process without a terminal. Usage: ``python -m
tests.integration.cli._fork_driver RUNS.json OUT.json``. RUNS.json is a list of ``{"argv":
[...], "home": DIR, "timeout": S}``; OUT.json gets ``{"rc", "out", "err", "seconds"}`` each
(``rc`` is -9 when the run was killed at its timeout). Forking from one interpreter that has
imported the CLI and built its command tree keeps ~250 runs within seconds; each child is
still a process of its own: a new session (no controlling terminal), stdin from /dev/null,
its own home.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
import traceback


def _child(argv: list[str], home: str, out: str, err: str) -> None:
    os.setsid()  # no controlling terminal: /dev/tty cannot be opened either
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 1)
    os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 2)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 (the child ends with os._exit)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    os.environ["BASTION_HOME"] = home
    sys.argv = ["bastion", *argv]
    code = 0
    try:
        from bastion.cli.main import main

        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # what the interpreter would print for an uncaught exception
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _wait(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return -9


def main() -> None:
    """Run every argv of RUNS.json and write the results to OUT.json."""
    runs = json.loads(open(sys.argv[1]).read())  # noqa: SIM115
    import typer.main

    import bastion.app  # noqa: F401  (imported once here, shared by every child)
    import bastion.cli.main

    bastion.cli.main._load_commands()
    bastion.cli.main._load_commands = lambda *_: None  # type: ignore[assignment]
    # typer rebuilds the click command tree from the annotations on every call (~0.2 s);
    # build it once here, so each child only parses and runs.
    command = typer.main.get_command(bastion.cli.main.app)
    typer.main.get_command = lambda _app: command  # type: ignore[assignment]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, run in enumerate(runs):
            out, err = os.path.join(tmp, f"{i}.out"), os.path.join(tmp, f"{i}.err")
            start = time.monotonic()
            pid = os.fork()
            if pid == 0:
                _child(run["argv"], run["home"], out, err)
            rc = _wait(pid, float(run.get("timeout", 20)))
            with open(out, errors="replace") as o, open(err, errors="replace") as e:
                results.append({"rc": rc, "out": o.read(), "err": e.read(),
                                "seconds": round(time.monotonic() - start, 2)})
    with open(sys.argv[2], "w") as fh:
        json.dump(results, fh)


if __name__ == "__main__":
    main()
