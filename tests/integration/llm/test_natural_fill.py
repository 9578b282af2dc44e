"""Natural requests (development half of ``bench/data/natural``) whose arguments the fill step
must take from the request as people write it, through bastion's real tool-calling path.

Each item exercises one grounding rule of ``llm/_constrained.py`` / ``llm/_grounding.py``:
words handed over after a colon or in quotes go into a free-text argument whole; a quoted
phrase is one value; a quoted phrase is no path for a parameter only documented as a path;
a name is taken from next to the word for what it names ("the infra repo"); a number of what
an optional parameter counts fills it ("the last 3 commits"). The whole set is
``bench/natural.py`` (not a test). One item of slack: greedy ties vary with CPU and threads.
"""

from __future__ import annotations

import pytest

from bastion.config.model import AgentConfig
from bastion.llm.worker import WorkerModel

pytest.importorskip("bfcl_eval")  # bench/bfcl.py's checker; installed by scripts/test-assets.sh
from bench.bfcl import run_bastion  # noqa: E402
from bench.natural import as_bfcl, check, half_of, load  # noqa: E402

pytestmark = pytest.mark.real_model

ITEMS = [
    "multiple_066",  # "ping kim: don't forget the keys" -> text after the colon
    "multiple_010",  # "... with 'water the plants' in it" -> the quoted content
    "multiple_044",  # "I already did 'fix the fence'" -> the whole quoted item, not 'fence'
    "multiple_052",  # "commit with message 'update docs'" -> no repo path from the quote
    "multiple_054",  # "the last 10 commits of the infra repo" -> repo infra, count 10
    "multiple_055",  # "sync the website repo with the remote" -> repo website
    "single_091",  # "show me the last 3 commits" -> count 3
    "single_120",  # "the home assistant container needs a kick" -> name 'home assistant'
]
FLOOR = len(ITEMS) - 1


async def test_natural_requests_fill_their_arguments_from_the_words(
    shipped_worker: WorkerModel,
) -> None:
    tools, items = load("all")
    by_id = {r["id"]: r for r in items}
    assert all(half_of(i) == "dev" for i in ITEMS)  # never the test half
    system = AgentConfig().system_prompt
    details = []
    right = 0
    for item_id in ITEMS:
        item = by_id[item_id]
        out = await run_bastion(shipped_worker, as_bfcl(tools, item), system)
        ok = check(tools, item, out)
        right += ok
        details.append(f"{item_id}: {'ok' if ok else 'FAIL'} {out} want {item['answer'][0]}")
    report = f"{right}/{len(ITEMS)}\n" + "\n".join(details)
    print(report)
    assert right >= FLOOR, report
