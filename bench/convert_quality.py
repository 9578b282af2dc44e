"""Is the Q8_0 conversion of the shipped Q4_1 model the same model? Greedy-token agreement.

``model.convert: auto`` loads the shipped Q4_1 model from its Q8_0 conversion (bastion.llm.convert).
Two measures: (1) teacher-forced, the standard one for quantisation: along Q4_1's own greedy
answers, how often the converted file's top-1 next token is the same and the KL divergence of
its next-token distribution from Q4_1's, with a Q4_0 conversion (the alternative that batches
best) as the reference; (2) free-running greedy answers on both files, each in its worker: how
many are identical and where they part. Usage::

    PYTHONPATH=src .venv/bin/python bench/convert_quality.py --tokens 32
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

PROMPTS = [
    "What is the capital of France? Answer in one sentence.",
    "Explain in two sentences what a firewall does.",
    "Write a short poem about the sea.",
    "Give three tips for writing clean Python code.",
    "Describe a sunrise in a few words.",
    "How many days are in a leap year?",
    "What does the ls command do?",
    "Translate 'good morning' into Spanish.",
    "Summarise the plot of Romeo and Juliet in one sentence.",
    "List the planets of the solar system.",
    "What is 12 times 12?",
    "Why is the sky blue?",
    "Write a haiku about autumn.",
    "What is a prime number?",
    "Name three programming languages.",
    "How do I read a file in Python?",
]


async def answers(convert: str, tokens: int) -> tuple[str, list[list[int]]]:
    """Each prompt's greedy answer as token ids, on the file ``convert`` chooses."""
    from bastion.llm._constrained import plain_messages
    from bastion.llm.worker import WorkerModel
    from bastion.messages import Message

    model = WorkerModel.load(n_ctx=1024, slots=1, workers=1, convert=convert)
    assert model.weights is not None and model._tokenizer is not None
    out: list[list[int]] = []
    try:
        for p in PROMPTS:
            async with model.lease() as lease:
                text, _ = await lease.complete(plain_messages([Message("user", p)]),
                                               schema=None, max_tokens=tokens)
            out.append(model._tokenizer.tokens(text))
    finally:
        await model.aclose()
    return f"{model.weights.path.name} ({'converted' if model.weights.converted else 'as is'})", out


def teacher_forced(tokens: int) -> None:
    """(1) top-1 agreement and KL of Q8_0 and Q4_0 conversions against Q4_1, same contexts."""
    import numpy as np

    from bastion.llm.convert import _run_quantizer, cache_dir, source_sha256
    from bastion.llm.embedded import load_llama, shipped_model_path

    src = shipped_model_path()
    q8 = cache_dir() / f"{source_sha256(src)}.q8_0.gguf"
    q4_0 = Path(tempfile.mkdtemp()) / "q4_0.gguf"
    _run_quantizer(src, q4_0, ftype=2)  # LLAMA_FTYPE_MOSTLY_Q4_0
    files = {"q4_1": src, "q8_0": q8, "q4_0": q4_0}
    ms = {k: load_llama(v, n_ctx=512, n_threads=2, logits_all=True) for k, v in files.items()}

    def logp(x: Any) -> Any:
        m = x.max(-1, keepdims=True)
        return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))

    agree = {"q8_0": [0, 0], "q4_0": [0, 0]}
    kl: dict[str, list[float]] = {"q8_0": [], "q4_0": []}
    ref = ms["q4_1"]
    for p in PROMPTS:
        prompt = f"<|im_start|>user\n{p}<|im_end|>\n<|im_start|>assistant\n"
        toks = ref.tokenize(prompt.encode(), special=True)
        ref.reset()
        out = ref.create_completion(prompt, max_tokens=tokens, temperature=0)
        seq = toks + ref.tokenize(out["choices"][0]["text"].encode(), add_bos=False)
        lp = {}
        for k, m in ms.items():
            m.reset()
            m.eval(seq)
            lp[k] = logp(np.array(m.scores[len(toks) - 1:len(seq) - 1]))
        for k in agree:
            same = lp["q4_1"].argmax(-1) == lp[k].argmax(-1)
            agree[k][0] += int(same.sum())
            agree[k][1] += len(same)
            kl[k].extend((np.exp(lp["q4_1"]) * (lp["q4_1"] - lp[k])).sum(-1).tolist())
    rows = [(k, n_same / n, f"{n_same}/{n}", float(np.mean(kl[k])), float(np.quantile(kl[k], 0.99)))
            for k, (n_same, n) in agree.items()]
    for k, share, frac, mean, p99 in rows:
        print(f"{k} vs q4_1, teacher-forced along q4_1's greedy answers: top-1 next token equal "
              f"{frac} = {share:.3f}, KL mean {mean:.4f}, p99 {p99:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=32, help="tokens per answer")
    args = ap.parse_args()
    os.environ.setdefault("BASTION_HOME", tempfile.mkdtemp(prefix="bastion-bench-"))
    name_a, a = asyncio.run(answers("off", args.tokens))  # (also makes the Q8_0 copy)
    name_b, b = asyncio.run(answers("auto", args.tokens))
    same = sum(x == y for x, y in zip(a, b, strict=True))
    prefix = []
    for x, y in zip(a, b, strict=True):
        k = 0
        while k < min(len(x), len(y)) and x[k] == y[k]:
            k += 1
        prefix.append(k)
    print(f"A: {name_a}\nB: {name_b}\n{len(PROMPTS)} prompts, greedy, {args.tokens} tokens max, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"identical answers: {same}/{len(PROMPTS)}; common token prefix: median "
          f"{statistics.median(prefix):.0f}, min {min(prefix)}; first token equal "
          f"{sum(p > 0 for p in prefix)}/{len(PROMPTS)}")
    for p, k, x, y in zip(PROMPTS, prefix, a, b, strict=True):
        if x != y:
            print(f"  parts at token {k} of {len(x)}/{len(y)}: {p}")
    teacher_forced(args.tokens)


if __name__ == "__main__":
    main()
