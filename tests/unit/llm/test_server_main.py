"""The model server launcher applies bastion's repack choice (llama_cpp.server has no option)."""

from __future__ import annotations

import pytest

from bastion.llm import server_main


def test_the_repack_choice_follows_the_cpu_unless_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bastion.llm.embedded.repack_default", lambda: False)  # an AMX CPU
    assert server_main.choose_repack({}) is False
    assert server_main.choose_repack({"BASTION_REPACK": "on"}) is True
    monkeypatch.setattr("bastion.llm.embedded.repack_default", lambda: True)
    assert server_main.choose_repack({}) is True
    assert server_main.choose_repack({"BASTION_REPACK": "OFF"}) is False
    assert server_main.choose_repack({"BASTION_REPACK": "maybe"}) is True  # unknown: default


def test_the_server_loads_with_the_wrapped_default(monkeypatch: pytest.MonkeyPatch) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    C = llama_cpp.llama_cpp
    ran: list[str] = []
    monkeypatch.setattr(server_main, "choose_repack", lambda: False)
    monkeypatch.setattr(C, "llama_model_default_params", C.llama_model_default_params)
    monkeypatch.setattr("runpy.run_module", lambda name, **kw: ran.append(name))
    monkeypatch.setattr("sys.argv", ["x", "--model", "m.gguf"])
    server_main.main()
    assert ran == ["llama_cpp.server"]
    assert C.llama_model_default_params().use_extra_bufts is False
