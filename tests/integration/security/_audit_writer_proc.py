"""Child process for the SIGKILL test: writes audit records from 4 threads as fast as it can
and prints the id of every record whose durable acknowledgement it received."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from bastion.security.audit import AuditLog


def main() -> None:
    log = AuditLog(Path(sys.argv[1]), checkpoint_every=500, flush_interval_ms=2)
    out = sys.stdout
    lock = threading.Lock()

    def worker(n: int) -> None:
        i = 0
        while True:
            i += 1
            r = log.record("tool_call", actor=f"w{n}", tool="shell", decision="allowed",
                           arguments={"command": f"echo {n}-{i}"}, result="x" * 64,
                           detail={"n": n, "i": i})
            if i % 10 == 0:  # acknowledge every 10th record, like the gateway does per call
                rid = log.wait(r)
                with lock:
                    out.write(f"{rid}\n")
                    out.flush()

    print("ready", flush=True)
    for n in range(4):
        threading.Thread(target=worker, args=(n,), daemon=True).start()
    threading.Event().wait()


if __name__ == "__main__":
    main()
