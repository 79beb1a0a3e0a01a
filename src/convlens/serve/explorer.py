"""What the explorer page asks of one loaded model, as plain values and PNG bytes.

:class:`Explorer` holds the model, the images the page can address (FashionMNIST test
images, a folder, uploads; each by an id, never a path:
:class:`~convlens.serve.catalog.Catalog`), a cache bounded in bytes, and one lock: every
short computation that touches the model (hooks, evaluation mode, ablation) runs under
it, so two requests never see each other's ablated units. When several wait, the one
with the earliest deadline for its kind goes first
(:class:`~convlens.serve.scheduler.DeadlineLock`); answers are kept in a cache
bounded in bytes (:class:`~convlens.serve.cache.AnswerCache`). Long work (the
fewest-units search, a unit's visualisation) runs as a job on its own copy of the model
(:mod:`convlens.serve.jobs`), with progress and cancellation. The web app
(:mod:`convlens.serve.app`) only maps these methods to HTTP.
"""

from __future__ import annotations

import base64
import copy
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convlens.core.device import model_device
from convlens.core.hooks import conv_layer_names
from convlens.interpret import ablation, units
from convlens.interpret.concepts import discover
from convlens.interpret.concepts.discover import Concepts
from convlens.interpret.filters import filter_tiles
from convlens.interpret.heads import default_layer
from convlens.interpret.maps import registry
from convlens.interpret.objectives import channel
from convlens.interpret.visualize import VisualizeSettings, layer_width, visualize
from convlens.models import LoadedModel
from convlens.render import atlas, concept_pages, heatmaps, unit_figures
from convlens.render.figure import png_bytes
from convlens.render.heatmaps import MapStyle
from convlens.serve.cache import AnswerCache
from convlens.serve.catalog import (
    LIMITS,
    MAX_UPLOAD_BYTES,
    BadRequestError,
    Catalog,
    Entry,
    NotFoundError,
)
from convlens.serve.jobs import Job, Jobs
from convlens.serve.scheduler import ABLATION, MAP, TOP5, DeadlineLock

FEWEST_BUDGET = 10.0  # seconds a fewest-units search may take
VISUALIZE_STEPS = 256  # optimisation steps of a unit's visualisation
# map methods that take many passes of the network: computed as jobs, with progress
CACHE_BYTES = 128 * 1024 * 1024  # answers kept (maps, PNGs, logits), in bytes
_JOB_ID = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class MapQuery:
    """A map the page asks for: of ``method`` for class ``class_index`` of ``image``
    (at ``layer``, the method's default when None), drawn in sign mode ``sign`` (the
    method's own when None) with the top ``clip`` % of the attribution saturated."""

    image: str
    class_index: int
    method: str
    layer: str | None = None
    sign: str | None = None
    clip: float = 2.0


def map_style(method: str, sign: str | None, clip: float) -> MapStyle:
    """How the page draws ``method``'s map: its sign mode (or ``sign``) and clipping."""
    if sign is not None and sign not in heatmaps.SIGNS:
        raise BadRequestError(f"sign must be one of {', '.join(heatmaps.SIGNS)}, got {sign!r}")
    if not 0 <= clip < 100:
        raise BadRequestError(f"clip must be a percentage in [0, 100), got {clip}")
    return MapStyle.for_method(method, sign, clip)


class Explorer:
    """One model and the images it is explored on (see the module doc)."""

    def __init__(
        self,
        loaded: LoadedModel,
        images_dir: Path | None = None,
        data: str | None = None,
        dissection: Path | None = None,
        data_dir: str | None = None,
        cache_bytes: int = CACHE_BYTES,
        concepts: Path | None = None,
    ) -> None:
        self.loaded = loaded
        self.model = loaded.model.eval()
        self.lock = DeadlineLock()
        p = loaded.preprocessing
        self._cached = AnswerCache(cache_bytes)
        self.catalog = Catalog(p, self._cached, images_dir, data, data_dir)
        self.uploads = self.catalog.uploads
        self.dissection_dir = dissection
        self.dissection = None if dissection is None else atlas.read_atlas(dissection)
        self.concepts_dir = concepts
        self.concepts = None if concepts is None else self._read_concepts(concepts)
        with self.lock(TOP5):
            probe = torch.zeros(1, p.channels, *p.input_size)
            self.default_layer = default_layer(self.model, probe)
        self.layers = conv_layer_names(self.model)
        if self.default_layer not in self.layers:
            self.layers.append(self.default_layer)
        self.methods = registry.names(default_only=True)
        # Long work runs as jobs on its own copy of the model, so that it never holds up
        # the short answers of other tabs (see convlens.serve.jobs).
        self._long_model = copy.deepcopy(self.model)
        self.jobs = Jobs()

    # ------------------------------------------------------------------ plumbing

    def image(self, image_id: str) -> Entry:
        """The image called ``image_id`` (see :class:`~convlens.serve.catalog.Catalog`)."""
        return self.catalog.image(image_id)

    def _check_layer(self, layer: str | None) -> str:
        layer = layer or self.default_layer
        if layer not in self.layers:
            raise NotFoundError(f"no layer {layer!r}; layers: {', '.join(self.layers)}")
        return layer

    def _top5(self, logits: torch.Tensor) -> list[dict[str, Any]]:
        probs = logits.float().softmax(-1)
        top = probs.topk(min(5, probs.shape[-1]))
        return [
            {"index": int(i), "name": self.loaded.classes[int(i)], "prob": float(p)}
            for p, i in zip(top.values, top.indices, strict=True)
        ]

    def _logits(self, image_id: str) -> torch.Tensor:
        img = self.image(image_id)

        def run() -> torch.Tensor:
            with self.lock(TOP5), torch.no_grad():
                device = model_device(self.model)
                return self.model(img.x.to(device)).float()[0].cpu()

        return self._cached(("logits", image_id), run)

    # ------------------------------------------------------------------ answers

    def info(self) -> dict[str, Any]:
        return {
            "model": self.loaded.name,
            "classes": list(self.loaded.classes),
            "layers": self.layers,
            "default_layer": self.default_layer,
            "methods": self.methods,
            "method_names": {m: registry.display_names()[m] for m in self.methods},
            "long_methods": [m for m in self.methods if registry.method(m).long],
            # a pixel attribution's own sign mode (the page offers the others)
            "signs": {
                m: registry.method(m).sign
                for m in self.methods
                if registry.method(m).family == registry.PIXEL
            },
            "images": self.image_count(),
            "dissection": None
            if self.dissection is None
            else {"layer": self.dissection["layer"], "units": len(self.dissection["units"])},
            "concepts": None
            if self.concepts is None
            else {"layer": self.concepts.layer, "groups": len(self.concepts.groups)},
            "max_upload_bytes": MAX_UPLOAD_BYTES,
            "limits": LIMITS,
            "filter_layers": conv_layer_names(self.model),
        }

    def image_count(self) -> int:
        return self.catalog.count()

    def list_images(self, offset: int, limit: int) -> dict[str, Any]:
        """A page of the browsable images, and the uploads."""
        return self.catalog.page(offset, limit, self.loaded.classes)

    def image_png(self, image_id: str) -> bytes:
        img = self.image(image_id)

        def run() -> bytes:
            a = (img.shown.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
            return png_bytes(a[..., 0] if a.shape[2] == 1 else a)

        return self._cached(("png", image_id), run)

    def add_upload(self, data: bytes, filename: str, content_type: str | None) -> dict[str, Any]:
        """Keep an uploaded image (see :meth:`Catalog.add_upload`)."""
        return self.catalog.add_upload(data, filename, content_type)

    def predict(self, image_id: str) -> dict[str, Any]:
        img = self.image(image_id)
        label = None if img.label is None else self.loaded.classes[img.label]
        return {"id": image_id, "label": label, "top5": self._top5(self._logits(image_id))}

    def _check_map(self, q: MapQuery) -> tuple[Entry, tuple[Any, ...], MapStyle]:
        """The image, the cache key of the map (its layer checked) and how to draw it."""
        img = self.image(q.image)
        if q.method not in self.methods:
            raise NotFoundError(f"no method {q.method!r}; methods: {', '.join(self.methods)}")
        if not 0 <= q.class_index < len(self.loaded.classes):
            raise NotFoundError(
                f"no class {q.class_index}; classes are 0..{len(self.loaded.classes) - 1}"
            )
        layer = None if q.layer is None else self._check_layer(q.layer)
        key = ("map", q.image, q.class_index, q.method, layer)
        return img, key, map_style(q.method, q.sign, q.clip)

    def cam_png(self, q: MapQuery) -> bytes:
        """The ``method`` map of class ``class_index`` as a heatmap PNG at input size,
        drawn in its style (a pixel attribution's sign mode ``sign``, clipped at the top
        ``clip`` % of its mass); a long method's map once its job (:meth:`start_map`)
        has made it."""
        img, key, style = self._check_map(q)
        _, _, class_index, method, layer = key
        if registry.method(method).long:
            done = self._cached.get(key)
            if done is None:
                raise BadRequestError(
                    f"{method} takes many passes of the network: start it as a job "
                    "(POST /api/jobs/map) and follow its progress",
                    409,
                )
            raw = done
        else:

            def run() -> torch.Tensor:
                with self.lock(MAP):
                    maps = registry.class_maps(
                        self.model, img.x, method=method, layer=layer,
                        classes=torch.tensor([[class_index]]),
                    )  # fmt: skip
                return heatmaps.drawable(maps)[0][0, 0]

            raw = self._cached(key, run)
        return bytes(self._cached((*key, style), lambda: heatmaps.heat_png(raw, style)))

    def start_map(self, q: MapQuery) -> dict[str, Any]:
        """Start (or find) the job computing a map; its result is the PNG in base64,
        drawn as :meth:`cam_png` draws it."""
        img, key, style = self._check_map(q)
        _, _, class_index, method, layer = key

        def work(on_step: Callable[[int, int], None]) -> dict[str, Any]:
            def compute() -> torch.Tensor:
                maps = registry.class_maps(
                    self._long_model, img.x, method=method, layer=layer,
                    classes=torch.tensor([[class_index]]), options={"on_step": on_step},
                )  # fmt: skip
                return heatmaps.drawable(maps)[0][0, 0]

            raw = self._cached(key, compute)
            png = self._cached((*key, style), lambda: heatmaps.heat_png(raw, style))
            return {"method": method, "class": class_index, "png": base64.b64encode(png).decode()}

        return self.jobs.submit("map", (*key, style), work).answer()

    def unit_maps(self, image_id: str, layer: str | None, top: int) -> dict[str, Any]:
        """The ``top`` most active units of ``layer`` with their maps (as PNG data)."""
        img = self.image(image_id)
        layer = self._check_layer(layer)
        if not 1 <= top <= 64:
            raise BadRequestError("top must be in 1..64")

        def run() -> dict[str, Any]:
            with self.lock(MAP):
                maps = units.feature_maps(self.model, img.x, layer)[0]  # [C, h, w]
            ranked = units.rank_units(maps[None], layer, min(top, maps.shape[0]))
            order, means = ranked.units[0], ranked.scores[0]
            size = (img.x.shape[2], img.x.shape[3])
            up = units.upsample(maps[order][None], size)[0]
            rows = []
            for k, u in enumerate(order.tolist()):
                png = base64.b64encode(heatmaps.heat_png(heatmaps.by_peak(up[k]))).decode()
                peak = float(maps[u].max())
                rows.append({"unit": u, "mean": float(means[k]), "peak": peak, "png": png})
            return {"layer": layer, "channels": maps.shape[0], "units": rows}

        return self._cached(("units", image_id, layer, top), run)

    def ablate(self, image_id: str, layer: str | None, unit_ids: list[int], mode: str) -> Any:
        """Top-5 before and after removing ``unit_ids`` of ``layer``."""
        img = self.image(image_id)
        layer = self._check_layer(layer)
        if mode not in ("activation", "weights"):
            raise BadRequestError(f"mode must be activation or weights, got {mode!r}")
        if not unit_ids:
            raise BadRequestError("choose at least one unit to ablate")
        if len(unit_ids) > 4096:
            raise BadRequestError(f"{len(unit_ids):,} units: ablate at most 4,096 at once")
        try:
            with self.lock(ABLATION):
                r = ablation.ablate(self.model, img.x, layer, unit_ids, mode)
        except ValueError as e:
            raise NotFoundError(str(e)) from e
        return {
            "layer": layer,
            "mode": mode,
            "units": list(r.units),
            "before": self._top5(r.logits_before[0]),
            "after": self._top5(r.logits_after[0]),
        }

    def fewest(self, image_id: str, layer: str | None, mode: str) -> dict[str, Any]:
        """The fewest units of ``layer`` whose removal changes the top-1 class (waits for
        the job of :meth:`start_fewest`)."""
        job = self.jobs.wait(self._fewest_job(image_id, layer, mode))
        if job.status != "done":
            raise BadRequestError(job.error or f"the search was {job.status}", 503)
        return dict(job.result)

    def start_fewest(self, image_id: str, layer: str | None, mode: str) -> dict[str, Any]:
        """Start (or find) the fewest-units search as a job; see :meth:`job`."""
        return self._fewest_job(image_id, layer, mode).answer()

    def _fewest_job(self, image_id: str, layer: str | None, mode: str) -> Job:
        img = self.image(image_id)
        layer = self._check_layer(layer)
        if mode not in ("activation", "weights"):
            raise BadRequestError(f"mode must be activation or weights, got {mode!r}")

        def work(on_step: Callable[[int, int], None]) -> dict[str, Any]:
            r = ablation.fewest_units(
                self._long_model, img.x, layer, mode=mode, max_units=32,
                budget=FEWEST_BUDGET, on_step=on_step,
            )  # fmt: skip
            return {
                "layer": layer,
                "mode": mode,
                "found": r.found,
                "method": r.method,
                "units": list(r.units),
                "stopped": r.stopped,
                "seconds": round(r.seconds, 2),
                "before": self._top5(r.logits_before),
                "after": self._top5(r.logits_after),
            }

        return self.jobs.submit("fewest", (image_id, layer, mode), work)

    def start_visualization(self, layer: str | None, unit: int) -> dict[str, Any]:
        """Start (or find) the job that visualises ``unit`` of ``layer`` (what the unit
        responds to most: :func:`convlens.interpret.visualize.visualize`, defaults)."""
        layer = self._check_layer(layer)

        def probe() -> int:
            with self.lock(TOP5):
                return layer_width(self.model, layer, self.loaded.preprocessing)

        width = self._cached(("width", layer), probe)
        if not 0 <= unit < width:
            raise NotFoundError(f"no unit {unit} in {layer} (0..{width - 1})")

        def work(on_step: Callable[[int, int], None]) -> dict[str, Any]:
            v = visualize(
                self._long_model, channel(layer, [unit]), self.loaded.preprocessing,
                VisualizeSettings(steps=VISUALIZE_STEPS), on_step=on_step,
            )  # fmt: skip
            dead = unit in v.dead
            png = (
                None
                if dead
                else base64.b64encode(png_bytes(unit_figures.visualization_tile(v, 0))).decode()
            )
            return {
                "layer": layer, "unit": unit, "dead": dead, "png": png,
                "activation": float(v.activation[0].mean()), "steps": VISUALIZE_STEPS,
            }  # fmt: skip

        return self.jobs.submit("visualize", (layer, unit), work).answer()

    def job(self, job_id: str) -> dict[str, Any]:
        """A job's status, progress and, once done, its result."""
        job = self.jobs.get(job_id) if _JOB_ID.fullmatch(job_id) else None
        if job is None:
            raise NotFoundError(f"no job {job_id[:40]!r} (finished jobs are kept for a while)")
        return job.answer()

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        job = self.jobs.cancel(job_id) if _JOB_ID.fullmatch(job_id) else None
        if job is None:
            raise NotFoundError(f"no job {job_id[:40]!r}")
        return job.answer()

    def filters_png(self, layer: str) -> bytes:
        if layer not in conv_layer_names(self.model):
            raise NotFoundError(f"no conv layer {layer!r}")

        def run() -> bytes:
            with self.lock(ABLATION):
                tiles = filter_tiles(self.model, layer)
            buf = io.BytesIO()
            unit_figures.draw_filters(tiles).savefig(buf, format="png", dpi=90, bbox_inches="tight")
            return buf.getvalue()

        return self._cached(("filters", layer), run)

    # ------------------------------------------------------------------ dissection

    def dissection_unit(self, unit: int) -> dict[str, Any]:
        if self.dissection is None:
            raise NotFoundError("no dissection was given (convlens serve --dissection DIR)")
        rows = self.dissection["units"]
        if not 0 <= unit < len(rows):
            raise NotFoundError(f"no unit {unit} in the dissection (0..{len(rows) - 1})")
        return {"layer": self.dissection["layer"], **rows[unit]}

    def dissection_strip(self, unit: int) -> bytes:
        self.dissection_unit(unit)  # checks
        assert self.dissection_dir is not None
        path = atlas.strip_file(self.dissection_dir, unit)
        if path is None:
            raise NotFoundError(f"the dissection has no image for unit {unit}")
        return path.read_bytes()

    # ------------------------------------------------------------------ concepts

    def _read_concepts(self, folder: Path) -> Concepts:
        found, _, model = concept_pages.read_concepts(folder)
        if model != self.loaded.name:
            raise ValueError(f"the concepts in {folder} are of {model}, not {self.loaded.name}")
        return found

    def concept_maps(self, image_id: str) -> dict[str, Any]:
        """Where the concepts are in the image: the concepts of its top class (its own
        factorisation, or the one of all images), most important first, each with its map
        (PNG data), its Sobol importance for the class and its card's address."""
        if self.concepts is None:
            raise NotFoundError("no concepts were given (convlens serve --concepts DIR)")
        found = self.concepts
        img = self.image(image_id)
        c = int(self._logits(image_id).argmax())
        group = next((g for g in found.groups if g.group == c), found.groups[0])
        row = group.classes.index(c) if c in group.classes else None
        order = group.ranking(c) if row is not None else list(range(len(group.bank)))
        tag = "all" if group.group is None else str(group.group)

        def run() -> dict[str, Any]:
            with self.lock(MAP):
                maps = discover.concept_maps(self.model, img.x, found.layer, group.bank,
                                             found.shift)[0]  # fmt: skip
            up = units.upsample(maps[None], (img.x.shape[2], img.x.shape[3]))[0]
            rows = []
            for i in order:
                png = base64.b64encode(heatmaps.heat_png(heatmaps.by_peak(up[i]))).decode()
                sobol = None if row is None else float(group.sobol[row, i])
                rows.append({"concept": i, "sobol": sobol, "png": png,
                             "card": f"/api/concepts/{tag}/{i}.png"})  # fmt: skip
            name = concept_pages.group_name(group.group, self.loaded.classes)
            return {"layer": found.layer, "class": self.loaded.classes[c], "group": name,
                    "concepts": rows}  # fmt: skip

        return self._cached(("concepts", image_id), run)

    def concept_card(self, tag: str, concept: int) -> bytes:
        """A concept's card: its picture and exemplars (written by convlens concepts)."""
        if self.concepts is None or self.concepts_dir is None:
            raise NotFoundError("no concepts were given (convlens serve --concepts DIR)")
        tags = {"all" if g.group is None else str(g.group): g for g in self.concepts.groups}
        if tag not in tags or not 0 <= concept < len(tags[tag].bank):
            raise NotFoundError(f"no concept {concept} of {tag!r}; groups: {', '.join(tags)}")
        path = self.concepts_dir / f"strip-{tag}-{concept}.png"
        if not path.is_file():
            raise NotFoundError(f"the concepts folder has no card for concept {concept}")
        return path.read_bytes()

    def close(self) -> None:
        """Stop the jobs; nothing to remove on disk: uploads live in memory only."""
        self.jobs.close()


__all__ = [
    "CACHE_BYTES",
    "FEWEST_BUDGET",
    "VISUALIZE_STEPS",
    "Explorer",
    "MapQuery",
    "map_style",
]
