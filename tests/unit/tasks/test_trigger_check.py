"""The webhook trigger's clock window, at its edges, with a fixed clock."""

from __future__ import annotations

import pytest

from bastion.tasks.triggers import TriggerRefused, check, signature

SECRET, NONCE, BODY = "whsec_0123456789abcdef", "n" * 16, b'{"a": 1}'


def _check(ts: int, now: float) -> None:
    check(SECRET, str(ts), NONCE, signature(SECRET, str(ts), NONCE, BODY), BODY,
          now=now, window_s=300)


@pytest.mark.parametrize("offset", [-300, 0, 300])
def test_a_timestamp_inside_the_window_passes(offset: int) -> None:
    _check(1_000_000 + offset, now=1_000_000)


@pytest.mark.parametrize("offset", [-301, 301])
def test_one_second_outside_the_window_is_stale(offset: int) -> None:
    with pytest.raises(TriggerRefused) as err:
        _check(1_000_000 + offset, now=1_000_000)
    assert err.value.code == "stale_timestamp" and "X-Bastion-Timestamp" in err.value.fix
