"""The chat template a GGUF carries and the tool-call format it defines (#17: checked on pull).

GGUF files are written with ``gguf``'s own writer (llama.cpp's library) and read back through
``bastion.llm.store``; the shipped model is the real-file case.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.llm import store
from bastion.llm.embedded import shipped_model_path

gguf = pytest.importorskip("gguf")

QWEN = ("{%- if tools %}{{- '<|im_start|>system\\n# Tools\\n<tools>' }}{%- for tool in tools %}"
        "{{- tool | tojson }}{%- endfor %}{{- '</tools>\\nFor each function call, return a json "
        "object within <tool_call></tool_call> XML tags' }}{%- endif %}")
LLAMA3 = ("{%- if tools is not none %}{{- 'Environment: ipython' }}{%- endif %}"
          "{%- if message.tool_calls %}{{- '<|python_tag|>' + tool_call.name }}{%- endif %}")
MISTRAL = "{%- if message.tool_calls %}{{- '[TOOL_CALLS][' }}{%- endif %}"
GENERIC = "{% if tools %}You may call: {{ tools | tojson }}{% endif %}{{ messages }}"
PLAIN = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>{% endfor %}"


def _gguf(path: Path, template: str | None) -> Path:
    w = gguf.GGUFWriter(str(path), "llama")
    if template is not None:
        w.add_chat_template(template)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize(("template", "fmt"), [
    (QWEN, "hermes"), (LLAMA3, "llama3"), (MISTRAL, "mistral"), (GENERIC, "generic"),
    (PLAIN, None),
])
def test_the_tool_call_format_is_read_from_the_template(tmp_path: Path, template: str,
                                                        fmt: str | None) -> None:
    path = _gguf(tmp_path / "m.gguf", template)
    assert store.chat_template(path) == template
    assert store.template_facts(path) == {"chat_template": True, "tool_format": fmt}


def test_no_template_and_not_a_gguf(tmp_path: Path) -> None:
    assert store.template_facts(_gguf(tmp_path / "bare.gguf", None)) == {
        "chat_template": False, "tool_format": None}
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\xff" * 64)
    assert store.chat_template(junk) is None


def test_the_shipped_model_has_a_chatml_template_without_tools() -> None:
    text = store.chat_template(shipped_model_path())
    assert text is not None and "<|im_start|>" in text
    assert store.template_facts(shipped_model_path()) == {"chat_template": True,
                                                          "tool_format": None}


def test_llama_cpp_reads_the_template_where_it_runs_and_gguf_agrees() -> None:
    """The fast path (llama.cpp's vocabulary-only load, ~0.1 s) is the one taken here; gguf's
    reader (2.2 s on this model, which made pulls 10x slower) reads the same text."""
    pytest.importorskip("llama_cpp")
    import gguf

    fast = store._template_by_llama_cpp(shipped_model_path())
    field_ = gguf.GGUFReader(str(shipped_model_path())).fields["tokenizer.chat_template"]
    assert fast == bytes(field_.parts[field_.data[0]]).decode("utf-8")


class _Vocab:
    """A tokenizer whose vocabulary holds ``specials`` as single tokens (the rest: bytes)."""

    def __init__(self, *specials: str) -> None:
        self.specials = specials

    def tokenize(self, text: bytes, add_bos: bool = False, special: bool = True) -> list[int]:
        s = text.decode()
        return [self.specials.index(s)] if s in self.specials else list(text)


@pytest.mark.parametrize(
    ("specials", "expected"),
    [
        (("<start_of_turn>", "<end_of_turn>"), "gemma"),  # gemma-3-270m: no template in file
        (("<|im_start|>", "<|im_end|>"), "chatml"),
        ((), "chatml"),  # neither: ChatML, as before
        (("<start_of_turn>",), "chatml"),  # both markers must be tokens
    ],
)
def test_a_gguf_without_a_template_gets_the_format_its_vocabulary_has(
    specials: tuple[str, ...], expected: str
) -> None:
    from bastion.llm.embedded import TEMPLATES, fallback_template

    assert fallback_template(_Vocab(*specials)) == TEMPLATES[expected]


def test_the_shipped_vocabulary_is_chatml() -> None:
    from bastion.llm.embedded import TEMPLATES, fallback_template, load_llama

    vocab = load_llama(shipped_model_path(), n_ctx=256, n_threads=1, vocab_only=True)
    assert fallback_template(vocab) == TEMPLATES["chatml"]
