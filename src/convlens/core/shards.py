"""Jobs over a data set as shards and a merge: where the shards run (in this process, or
as tasks on a Ray cluster) and where their finished states are kept (a folder with a
manifest, so that a rerun after a crash computes only the missing shards).

A job gives a picklable ``task(shard) -> state`` (a dict of tensors and numbers, on the
CPU) and merges the states itself, in shard order; this module never looks inside a
state. Shard boundaries are multiples of the job's batch size, so every batch holds the
same images whatever the number of shards, and a merge that is exact (counts add, top-k
of the union with ties broken by index) gives the same answer for 1 shard or 70.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from convlens.core.device import keep_freed_memory
from convlens.core.fileio import atomic_torch_save, atomic_write_json

MANIFEST = "manifest.json"


class ShardError(ValueError):
    """A shard failed for good (the finished ones are kept), or a folder belongs to
    another job, or the cluster cannot be reached."""


@dataclass(frozen=True)
class Shard:
    """Items ``start`` to ``stop`` (exclusive) of a job, shard ``number``."""

    number: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Sharding:
    """How a job over a data set runs: in ``shards`` parts (their merge is exact, so
    the answer is the same for any number), here or on the Ray cluster ``ray``
    (``local``, ``local:N`` or a running cluster's address), each finished part kept in
    ``state_dir`` so that a rerun computes only the missing ones."""

    shards: int = 1
    ray: str | None = None
    state_dir: str | os.PathLike[str] | None = None


def plan(n: int, shards: int, align: int = 1) -> list[Shard]:
    """``n`` items in ``shards`` contiguous shards of nearly equal size, each starting at
    a multiple of ``align`` (fewer shards when there are fewer blocks of ``align``)."""
    if shards < 1:
        raise ValueError(f"`shards` must be at least 1, got {shards}")
    blocks = max(1, -(-n // align))
    shards = min(shards, blocks)
    edges = [min(n, (blocks * i // shards) * align) for i in range(shards + 1)]
    return [Shard(i, edges[i], edges[i + 1]) for i in range(shards)]


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of named tensors (names, shapes and bytes)."""
    h = hashlib.sha256()
    for name, t in tensors.items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of the model's parameters and buffers."""
    return tensors_digest(model.state_dict())


class ShardFolder:
    """Finished shards' states in ``folder``, which belongs to the job its
    ``manifest.json`` describes: a folder of another job is refused, never mixed."""

    def __init__(self, folder: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.manifest = json.loads(json.dumps(manifest))  # as it reads back from disk
        path = self.folder / MANIFEST
        if path.is_file():
            try:
                old = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise ShardError(f"{path} is unreadable ({e}); delete the folder") from None
            if old != self.manifest:
                keys = sorted(k for k in {*old, *self.manifest} if old.get(k) != manifest.get(k))
                raise ShardError(
                    f"{self.folder} holds shards of another job (it differs in "
                    f"{', '.join(keys)}); use another `state_dir` or delete it"
                )
        elif self.folder.exists() and any(self.folder.iterdir()):
            raise ShardError(f"{self.folder} is not empty and has no {MANIFEST}; use another")
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, self.manifest)

    def path(self, part: str, shard: Shard) -> Path:
        return self.folder / f"{part}-{shard.number:05d}.pt"

    def load(self, part: str, shard: Shard) -> dict[str, Any] | None:
        """The state of a finished shard, or ``None``."""
        path = self.path(part, shard)
        if not path.is_file():
            return None
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
        return state

    def save(self, part: str, shard: Shard, state: dict[str, Any]) -> None:
        atomic_torch_save(self.path(part, shard), state)


def run_shards(
    task: Callable[[Shard], dict[str, Any]],
    shards: Sequence[Shard],
    *,
    ray: str | None = None,
    folder: ShardFolder | None = None,
    part: str = "shard",
    gpus: float = 0.0,
    on_done: Callable[[Shard, bool], None] | None = None,
) -> list[dict[str, Any]]:
    """The states of ``shards``, in shard order: each loaded from ``folder`` when it
    finished before, else computed (here, or on the Ray cluster ``ray``) and saved
    there. ``on_done(shard, resumed)`` after each (``resumed``: loaded, not computed).
    A shard that fails for good ends the job with a :class:`ShardError` naming it, after
    the others have finished and been saved."""
    states: dict[int, dict[str, Any]] = {}
    todo = []
    for shard in shards:
        state = folder.load(part, shard) if folder is not None else None
        if state is None:
            todo.append(shard)
            continue
        states[shard.number] = state
        if on_done is not None:
            on_done(shard, True)

    def finished(shard: Shard, state: dict[str, Any]) -> None:
        if folder is not None:
            folder.save(part, shard, state)
        states[shard.number] = state
        if on_done is not None:
            on_done(shard, False)

    if ray is None:
        failed = []
        for shard in todo:
            try:
                state = task(shard)
            except (ValueError, OSError) as e:
                if folder is None:  # nothing would be kept: the error as it is
                    raise
                failed.append(_failure(shard, e))
                continue
            finished(shard, state)
        if failed:
            raise ShardError(_failures(failed, folder))
    elif todo:
        _on_ray(task, todo, ray, gpus, finished, folder)
    return [states[s.number] for s in shards]


def _on_ray(
    task: Callable[[Shard], dict[str, Any]],
    todo: Sequence[Shard],
    address: str,
    gpus: float,
    finished: Callable[[Shard, dict[str, Any]], None],
    folder: ShardFolder | None,
) -> None:
    """Run ``todo`` as Ray tasks (the task, with its model, goes into the object store
    once); a worker that dies is retried by Ray; a task that raises is not."""
    ray = connect(address)
    payload = ray.put(task)
    remote = ray.remote(_call).options(num_cpus=1, num_gpus=gpus, max_retries=3)
    pending = {remote.remote(payload, shard): shard for shard in todo}
    failed: list[str] = []
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        shard = pending.pop(ready[0])
        try:
            finished(shard, ray.get(ready[0]))
        except ray.exceptions.RayError as e:
            failed.append(_failure(shard, getattr(e, "cause", None) or e))
    if failed:
        raise ShardError(_failures(failed, folder))


def _failure(shard: Shard, e: BaseException) -> str:
    lines = str(e).strip().splitlines() or [type(e).__name__]
    return f"shard {shard.number} (items {shard.start}-{shard.stop - 1}): {lines[-1]}"


def _failures(failed: list[str], folder: ShardFolder | None) -> str:
    kept = f"the others are kept in {folder.folder}" if folder else "the others finished"
    return f"{len(failed)} shard(s) failed for good, {kept}: " + "; ".join(failed)


def _call(task: Callable[[Shard], dict[str, Any]], shard: Shard) -> dict[str, Any]:
    torch.set_num_threads(1)  # one CPU per task, as the task asked Ray for
    # a worker is a process of ours: its allocator keeps freed batches for reuse, as
    # `convlens train` does (a fresh worker's dissection shards ran 1.4x slower than the
    # same shards in a warmed-up process, benchmarks/dissect_worker_probe.py)
    keep_freed_memory()
    return task(shard)


def connect(address: str) -> Any:
    """The ``ray`` module, connected: ``local`` or ``local:N`` starts a cluster of N
    worker CPUs on this machine (default: one per core); anything else is the address
    of a running cluster (``ray start --head`` prints it)."""
    local = address == "local" or address.startswith("local:")
    if local:
        # a local cluster's workers run this very interpreter, not Ray's re-run of the
        # driver's `uv run` command line in a copy of the working folder (which fails
        # on a relative uv path, and would sync an environment per worker)
        os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    try:
        import ray
    except ImportError:
        raise ShardError(
            "running on Ray needs the ray package: pip install 'convlens[ray]'"
        ) from None
    if ray.is_initialized():
        return ray
    options: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "configure_logging": False,
    }
    if local:
        constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
        if constants is not None and os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] == "0":
            constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV = False  # ray reads it when imported
        count = address.partition(":")[2]
        if count and (not count.isdigit() or int(count) < 1):
            raise ShardError(f"`ray` local:N needs a number N >= 1, got {address!r}")
        # Ray lowers its workers' priority (nice 15) by default: on a machine busy with
        # anything else they then starve (a cold job took 105 s instead of 10 here)
        workers = int(count) if count else os.cpu_count()
        ray.init(num_cpus=workers, _system_config={"worker_niceness": 0}, **options)
        return ray
    _answers(address)
    try:
        ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise ShardError(
            f"no Ray cluster answers at `ray` {address!r} ({first}); start one with "
            "`ray start --head`, or use local"
        ) from None
    return ray


def _answers(address: str, timeout: float = 5.0) -> None:
    """Refuse at once a ``host:port`` that nothing listens on (Ray itself retries it for
    minutes); other forms (``auto``, ``ray://...``) are left to Ray."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "/" in host:
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ShardError(
            f"no Ray cluster answers at `ray` {address!r} ({e.strerror or e}); start one "
            "with `ray start --head`, or use local"
        ) from None


__all__ = [
    "MANIFEST",
    "Shard",
    "ShardError",
    "ShardFolder",
    "Sharding",
    "connect",
    "plan",
    "run_shards",
    "tensors_digest",
    "weights_digest",
]
