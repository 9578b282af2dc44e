"""Finding chromium and starting it, inside bubblewrap.

There is no unsandboxed fallback: when bubblewrap does not work here chromium is not started
(``browser.sandbox: none`` is the explicit, unsafe opt-in). In the sandbox chromium gets a
read-only system root, a private /tmp (its profile), new namespaces of every kind -- network
included, so it has no network of its own -- and a clean environment. Playwright talks to it
over ``--remote-debugging-pipe`` (file descriptors 3 and 4, which bwrap passes through); every
request it makes is answered by bastion's route handler (see ``_network``), which is the
browser's only way out.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
from pathlib import Path

from bastion.errors import ToolError

INSTALL_HINT = "apt install chromium"
# Debian's /usr/bin/chromium is a shell wrapper that reads /etc/chromium.d; the real binary:
_CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser")
ARGS = [
    "--no-sandbox",  # chromium's own sandbox needs privileges; bwrap is the sandbox
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--disable-features=Translate,MediaRouter,OptimizationHints",
    # Anything not answered by the route handler (it answers every http(s) request) goes to a
    # dead proxy, so nothing reaches the network behind bastion's back, sandbox or not.
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
    # WebRTC would send UDP (STUN/TURN/ICE) around any proxy; only proxied (dead) UDP is left,
    # and NO_WEBRTC removes the API from every frame as well.
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
]
#: Init script of every browser context: no RTCPeerConnection (nor its prefixed forms).
NO_WEBRTC = """(() => {
  for (const name of ["RTCPeerConnection", "webkitRTCPeerConnection", "RTCDataChannel",
                      "RTCIceCandidate", "RTCSessionDescription", "RTCRtpSender",
                      "RTCRtpReceiver", "RTCRtpTransceiver", "RTCIceTransport",
                      "RTCDtlsTransport", "RTCSctpTransport", "RTCCertificate"]) {
    try { Object.defineProperty(globalThis, name, {value: undefined, writable: false,
                                                   configurable: false}); } catch (e) {}
  }
})();"""
SANDBOX_FIX = ("install bubblewrap (apt-get install bubblewrap) and allow unprivileged user "
               "namespaces (sysctl kernel.unprivileged_userns_clone=1); only if you accept "
               "pages running on the host without any sandbox: browser.sandbox: none (unsafe)")
_ETC = ("fonts", "ld.so.cache", "localtime", "nsswitch.conf", "mime.types", "ssl/certs",
        "ca-certificates", "alternatives")


def find_chromium(configured: Path | None = None) -> str | None:
    """Return the chromium binary to run, or None when none is installed."""
    for cand in ([str(configured)] if configured else list(_CANDIDATES)):
        if Path(cand).is_file() and os.access(cand, os.X_OK):
            return cand
    return None


def require_chromium(configured: Path | None = None) -> str:
    """Return the chromium binary or raise a clear error with the install line."""
    exe = find_chromium(configured)
    if exe is None:
        where = str(configured) if configured else "/usr/lib/chromium/chromium"
        raise ToolError(f"chromium is not installed ({where} not found)",
                        fix=f"{INSTALL_HINT} (or set browser.executable)")
    return exe


def bwrap_problem() -> str | None:
    """Return why bubblewrap cannot sandbox chromium here, or None when it can."""
    from bastion.security.sandbox.bwrap import BubblewrapSandbox

    return BubblewrapSandbox.available()


def sandbox_wrapper(chromium: str, folder: Path) -> Path:
    """Write a launcher that execs ``chromium`` inside bubblewrap; return its path."""
    from bastion.security.sandbox.bwrap import root_binds

    bwrap = shutil.which("bwrap") or "/usr/bin/bwrap"
    argv = [bwrap, *root_binds()]
    for name in _ETC:
        host = Path("/etc") / name
        if host.exists():
            argv += ["--ro-bind", str(host), f"/etc/{name}"]
    argv += [
        "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp",
        "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        "--clearenv", "--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp",
        "--setenv", "LANG", "C.UTF-8", "--setenv", "PATH", "/usr/bin:/bin",
        "--chdir", "/tmp", "--", chromium,
    ]
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="chromium-bwrap-", suffix=".sh", dir=folder)
    with os.fdopen(fd, "w") as fh:
        fh.write("#!/bin/sh\n# bastion: chromium in bubblewrap, no network namespace of its own\n")
        fh.write("exec " + " ".join(shlex.quote(a) for a in argv) + ' "$@"\n')
    os.chmod(name, 0o700)
    return Path(name)
