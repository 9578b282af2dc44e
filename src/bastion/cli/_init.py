"""``bastion init``: detect the hardware, recommend a model, write ``bastion.yaml``."""

from __future__ import annotations

import secrets

from pydantic import SecretStr
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bastion.config.model import Config, HardwareConfig
from bastion.hardware import HardwareInfo, Recommendation

# The shipped model's context is kept at the default unless the machine is tight on memory.
SHIPPED_CONTEXT = 4096


def _repack(amx: bool) -> tuple[bool, str]:
    """Whether llama.cpp repacks weights here, and why; on an AMX CPU a probe's verdict."""
    if not amx:
        return True, "weight repacking on (llama.cpp's fastest CPU kernels)"
    from bastion.llm.embedded import repack_verdict

    got = repack_verdict()
    return got.repack, got.why


def _build() -> str | None:
    """Which CPU the installed llama.cpp was built for, or why it cannot run here."""
    import importlib.util

    from bastion.llm import native_build

    if importlib.util.find_spec("llama_cpp") is None:
        return None
    refused = native_build.refusal()
    return refused.user_text() if refused is not None else native_build.describe()


def hardware_table(hw: HardwareInfo, rec: Recommendation) -> Table:
    """Return a table of what was detected and what is recommended."""
    table = Table(title="hardware", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    cpu = hw.cpu
    flags = ", ".join(cpu.flags) or "none of AVX2/AVX-512/NEON"
    table.add_row("CPU", escape(f"{cpu.model} ({cpu.arch})"))
    table.add_row("cores", f"{cpu.physical_cores} physical, {cpu.logical_cores} logical")
    table.add_row("SIMD", flags)
    repack, why = _repack(cpu.amx)
    table.add_row("llama.cpp", why)
    build = _build()
    if build is not None:
        table.add_row("build", escape(build))
    if not hw.gpus and cpu.amx and repack:  # llama.cpp's AMX kernels run
        table.add_row("weights", "Q4_1 weights (the shipped model) load as they are: llama.cpp's "
                      "AMX kernels batch them; a Q5_1 model up to 1 GiB is converted once to "
                      "Q8_0, which llama.cpp batches on a CPU (model.convert)")
    elif not hw.gpus:
        table.add_row("weights", "a Q4_1/Q5_1 model up to 1 GiB (the shipped one) is converted "
                      "once to Q8_0, which llama.cpp batches on a CPU (model.convert)")
    table.add_row("RAM", f"{hw.ram_mb / 1024:.1f} GiB")
    for gpu in hw.gpus:
        extra = f", driver {gpu.driver}" if gpu.driver else ""
        table.add_row("GPU", escape(f"{gpu.name}: {gpu.memory_mb / 1024:.1f} GiB{extra}"))
    if not hw.gpus:
        table.add_row("GPU", "none (CPU inference)")
    elif hw.gpu_backend is False:
        from bastion.llm.native_build import GPU_REBUILD

        table.add_row("GPU offload", escape(f"none: this llama.cpp build has no GPU backend, so "
                                            f"models run on the CPU (fix: {GPU_REBUILD})"))
    table.add_row("accelerator", hw.accelerator)
    table.add_row("recommended", escape(rec.label))
    table.add_row("context", str(rec.context))
    table.add_row("why", escape("; ".join(rec.reasons)))
    return table


def build_config(hw: HardwareInfo, rec: Recommendation) -> Config:
    """Return a fresh config for this machine with a new API token."""
    config = Config()
    config.hardware = HardwareConfig(
        cpu=hw.cpu.model,
        cores=hw.cpu.physical_cores,
        ram_gb=round(hw.ram_mb / 1024, 1),
        gpu=hw.gpus[0].name if hw.gpus else None,
        accelerator=hw.accelerator,
        cpu_flags=list(hw.cpu.flags),
        gpu_memory_mb=hw.gpu_memory_mb or None,
        recommended_model=rec.label,
        recommended_quant=rec.quant,
        recommended_context=rec.context,
    )
    config.model.n_threads = rec.threads
    config.model.n_gpu_layers = rec.gpu_layers
    config.model.n_ctx = min(SHIPPED_CONTEXT, rec.context)
    config.api.token = SecretStr(secrets.token_urlsafe(32))
    return config


def pin_audit_key(config: Config) -> str:
    """Create (or read) the audit signing key and pin its fingerprint in ``config``.

    The pin lives in bastion.yaml, outside the audit directory: ``bastion audit verify`` trusts
    only pinned keys, so a key swapped into the ``.pub`` file beside the log is not trusted.
    """
    from bastion.crypto.keys import FileSigner, fingerprint
    from bastion.security.setup import audit_path

    db = audit_path()
    fp = fingerprint(FileSigner(db.with_name(db.stem + "-signing.key")).public_hex, 32)
    config.audit.key_fingerprints = [fp]
    return fp


def admin_user(config: Config) -> None:
    """Make the API token the ``admin`` user's key (``bastion users list`` shows it)."""
    from bastion.security.keystore import open_store

    if config.api.token is None:
        return
    store = open_store()
    try:
        store.ensure_admin(config.api.token.get_secret_value())
    finally:
        store.close()


def print_next_steps(console: Console, rec: Recommendation) -> None:
    """Tell the user what to do next."""
    console.print(
        "The shipped model (SmolLM2-135M) is configured. For better answers on this machine, "
        f"fetch {escape(rec.model)} ({rec.quant}), verified, and use it "
        f"(bastion model recommend says why):\n"
        "  bastion init --pull\n"
        f"  (or: bastion model pull {escape(rec.pull_spec)}, then bastion model use NAME)\n"
        "Keep a local GGUF embedded (model.path) rather than behind a llama.cpp server: "
        "it chooses tools as well and answers faster (bench/tool_modes.py).\n"
        "Next: bastion doctor, then bastion chat"
    )
