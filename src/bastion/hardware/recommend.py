"""Turn detected hardware into a model recommendation: size, quantisation, context, offload."""

from __future__ import annotations

from dataclasses import dataclass, field

from bastion.hardware.info import HardwareInfo

# (billions of parameters, an instruct model of that size trained for tool calls, a Hugging
# Face repo with its GGUF builds in every quantisation of QUANTS; the files carry the model's
# chat template, which `bastion model pull` records)
SIZES: tuple[tuple[float, str], ...] = (
    (70, "Llama-3.3-70B-Instruct"),
    (32, "Qwen2.5-32B-Instruct"),
    (14, "Qwen2.5-14B-Instruct"),
    (8, "Llama-3.1-8B-Instruct"),
    (3, "Llama-3.2-3B-Instruct"),
    (1.5, "Qwen2.5-1.5B-Instruct"),
    (0.5, "Qwen2.5-0.5B-Instruct"),
)
REPOS: dict[str, str] = {
    "Llama-3.3-70B-Instruct": "bartowski/Llama-3.3-70B-Instruct-GGUF",
    "Qwen2.5-32B-Instruct": "bartowski/Qwen2.5-32B-Instruct-GGUF",
    "Qwen2.5-14B-Instruct": "bartowski/Qwen2.5-14B-Instruct-GGUF",
    "Llama-3.1-8B-Instruct": "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF",
    "Llama-3.2-3B-Instruct": "bartowski/Llama-3.2-3B-Instruct-GGUF",
    "Qwen2.5-1.5B-Instruct": "bartowski/Qwen2.5-1.5B-Instruct-GGUF",
    "Qwen2.5-0.5B-Instruct": "bartowski/Qwen2.5-0.5B-Instruct-GGUF",
}
# The native tool-call format each recommended model's chat template defines (checked on pull:
# bastion.llm.store.tool_format). Qwen2.5 uses Hermes-style <tool_call> blocks; Llama 3.x JSON
# after <|python_tag|> / the ipython role.
TOOL_FORMATS: dict[str, str] = {
    model: ("hermes" if model.startswith("Qwen") else "llama3") for model in REPOS
}
# GiB of weights per billion parameters, best quality first.
QUANTS: tuple[tuple[str, float], ...] = (("Q8_0", 1.07), ("Q5_K_M", 0.72), ("Q4_K_M", 0.61))
OVERHEAD_GB = 0.8  # runtime buffers besides weights and KV cache
# On the CPU, generation speed falls with model size: cap by physical cores.
CPU_CAPS: tuple[tuple[int, float], ...] = ((4, 3), (8, 8), (16, 14))


@dataclass(slots=True)
class Recommendation:
    """What to run on this machine, and why."""

    size_b: float
    model: str
    quant: str
    context: int
    gpu_layers: int  # -1 = all layers on the GPU
    threads: int
    budget_gb: float
    reasons: list[str] = field(default_factory=list)

    @property
    def repo(self) -> str:
        """The Hugging Face repo with this model's GGUF files."""
        return REPOS[self.model]

    @property
    def tool_format(self) -> str:
        """The tool-call format this model's chat template should define."""
        return TOOL_FORMATS[self.model]

    @property
    def pull_spec(self) -> str:
        """What to pass to ``bastion model pull``: ``owner/repo:QUANT``."""
        return f"{self.repo}:{self.quant}"

    @property
    def label(self) -> str:
        """Short form, e.g. ``8B Q4_K_M``."""
        size = f"{self.size_b:g}B"
        return f"{size} {self.quant} ({self.model})"


def _budget_gb(hw: HardwareInfo) -> tuple[float, str]:
    ram_gb = hw.ram_mb / 1024
    if hw.accelerator in ("cuda", "rocm"):
        return hw.gpu_memory_mb / 1024 * 0.9, f"{hw.gpu_memory_mb / 1024:.0f} GiB of GPU memory"
    if hw.accelerator == "metal":
        gib = hw.gpu_memory_mb / 1024
        return gib, f"{gib:.0f} GiB of unified memory for Metal"
    return ram_gb * 0.6, f"{ram_gb:.0f} GiB RAM (60% for the model)"


def _context_for(spare_gb: float, cpu_only: bool) -> int:
    ctx = 2048
    for need, value in ((1.0, 4096), (2.0, 8192), (4.0, 16384), (8.0, 32768)):
        if spare_gb >= need:
            ctx = value
    return min(ctx, 8192) if cpu_only else ctx  # long prompts are slow to process on a CPU


def recommend(hw: HardwareInfo) -> Recommendation:
    """Pick the largest model whose Q4_K_M weights fit, then the best quantisation that fits."""
    budget, why = _budget_gb(hw)
    cpu_only = hw.accelerator == "cpu"
    reasons = [f"memory budget {budget:.1f} GiB from {why}"]
    if hw.gpus and hw.gpu_backend is False:
        reasons.insert(0, f"{hw.gpus[0].name} found, but the installed llama.cpp has no GPU "
                          "backend, so the model runs on the CPU (`CMAKE_ARGS=-DGGML_CUDA=on "
                          "make install` builds one for NVIDIA)")
    cap = float("inf")
    if cpu_only:
        cores = hw.cpu.physical_cores
        cap = next((size for limit, size in CPU_CAPS if cores <= limit), 32.0)
        reasons.append(f"CPU only with {cores} physical cores: at most {cap:g}B for usable speed")
        if not (hw.cpu.avx2 or hw.cpu.neon):
            cap = min(cap, 1.5)
            reasons.append("no AVX2/NEON: llama.cpp runs slowly, so a small model")
    size, model = SIZES[-1]
    for s, m in SIZES:
        if s <= cap and s * QUANTS[-1][1] + OVERHEAD_GB <= budget:
            size, model = s, m
            break
    reasons.append(f"{model}: the largest instruct model in the table that fits; trained for "
                   f"tool calls, GGUF files with its chat template in {REPOS[model]}")
    quant = QUANTS[-1][0]
    weights = size * QUANTS[-1][1]
    if not cpu_only:  # on a CPU, Q4 is also the fastest; on a GPU spend spare memory on quality
        for q, per_b in QUANTS:
            if size * per_b + OVERHEAD_GB + 1.0 <= budget:
                quant, weights = q, size * per_b
                break
    spare = budget - weights - OVERHEAD_GB
    context = _context_for(spare, cpu_only)
    reasons.append(f"{spare:.1f} GiB left for the KV cache: context {context}")
    if hw.cpu.avx512:
        reasons.append("AVX-512 available: llama.cpp uses it")
    return Recommendation(
        size_b=size,
        model=model,
        quant=quant,
        context=context,
        gpu_layers=0 if cpu_only else -1,
        threads=max(1, hw.cpu.physical_cores),
        budget_gb=round(budget, 1),
        reasons=reasons,
    )
