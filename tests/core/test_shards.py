"""Where shards run: one clear line when Ray is missing or its cluster does not answer."""

from __future__ import annotations

import sys
import time

import pytest

from convlens.core.shards import ShardError, connect


def test_ray_not_installed_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as without it
    with pytest.raises(ShardError, match=r"needs the ray package: pip install 'convlens\[ray\]'"):
        connect("local")


def test_an_address_nobody_answers_is_one_line() -> None:
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a cluster is connected in this process")
    start = time.monotonic()
    with pytest.raises(ShardError, match="no Ray cluster answers at `ray` '127.0.0.1:9'") as e:
        connect("127.0.0.1:9")
    assert "\n" not in str(e.value)
    print(f"refused after {time.monotonic() - start:.1f} s")


def test_local_needs_a_count() -> None:
    pytest.importorskip("ray")
    with pytest.raises(ShardError, match="local:N needs a number N >= 1"):
        connect("local:zero")
