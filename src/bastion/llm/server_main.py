"""llama-cpp-python's OpenAI-compatible server with bastion's repack choice.

``python -m bastion.llm.server_main [llama_cpp.server options]`` runs ``python -m
llama_cpp.server`` with the same options.

``llama_cpp.server`` has no option for llama.cpp's ``use_extra_bufts``, and its default
(repacking on) segfaults in the first matrix multiply on CPUs with AMX when llama.cpp was built
by GCC 12 without bastion's fix (:mod:`bastion.llm.repack` probes the build). This runs the
same server, same options, with llama-cpp-python's model-parameter default wrapped first, so
``bastion node serve`` works on every CPU with no flag to set. ``BASTION_REPACK=on|off``
overrides the choice (as ``model.repack`` does for the embedded model).
"""

from __future__ import annotations

import os
import runpy
import sys
from typing import Any


def choose_repack(env: dict[str, str] | None = None) -> bool:
    """Return whether the server may repack weights: ``BASTION_REPACK``, else the default."""
    from bastion.llm.embedded import repack_default

    forced = (env if env is not None else dict(os.environ)).get("BASTION_REPACK", "").lower()
    if forced in ("on", "off"):
        return forced == "on"
    return repack_default()


def install_hooks() -> None:
    """Load models with bastion's repack choice and free the OpenMP pool each load leaves."""
    import llama_cpp
    import llama_cpp.llama_cpp as C

    from bastion.llm.embedded import release_openmp_threads, with_repack

    C.llama_model_default_params = with_repack(C.llama_model_default_params, choose_repack())
    init = llama_cpp.Llama.__init__

    def init_then_release(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        release_openmp_threads()  # the server decodes on its thread pool, not the loading thread

    llama_cpp.Llama.__init__ = init_then_release  # type: ignore[method-assign]


def main() -> None:
    """Install the hooks, then run ``llama_cpp.server`` with this process's arguments."""
    install_hooks()
    sys.argv[0] = "llama_cpp.server"
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
