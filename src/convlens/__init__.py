"""convlens: look inside convolutional networks, and train the networks you look into.

The public API, importable from here (``from convlens import load_model``); each name
lives in the sub-package its job belongs to (see README, "Architecture"). Names load on
first use, so that ``import convlens`` (and the CLI's start) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> (module, name there)
_API: dict[str, tuple[str, str]] = {
    # data
    "load_fashion_mnist": ("convlens.data.fashion_mnist", "load_fashion_mnist"),
    "Dataset": ("convlens.data.fashion_mnist", "Dataset"),
    "Preprocessing": ("convlens.data.images", "Preprocessing"),
    "Inputs": ("convlens.data.images", "Inputs"),
    "load_images": ("convlens.data.images", "load_files"),
    "open_source": ("convlens.data.catalog", "open_source"),
    "TensorSource": ("convlens.data.sources", "TensorSource"),
    # models
    "load_model": ("convlens.models.zoo", "load"),
    "LoadedModel": ("convlens.models.zoo", "LoadedModel"),
    "FashionCNN": ("convlens.models.fashion_cnn", "FashionCNN"),
    "LeNet": ("convlens.models.lenet", "LeNet"),
    "list_layers": ("convlens.core.hooks", "list_layers"),
    "LayerInfo": ("convlens.core.hooks", "LayerInfo"),
    "precision": ("convlens.core.precision", "precision"),
    # training and inference
    "TrainConfig": ("convlens.config", "TrainConfig"),
    "train": ("convlens.training.loop", "train"),
    "resume": ("convlens.training.loop", "resume"),
    "TrainResult": ("convlens.training.loop", "TrainResult"),
    "predict_logits": ("convlens.inference", "predict_logits"),
    "get_prediction": ("convlens.inference", "get_prediction"),
    "evaluate": ("convlens.inference", "evaluate"),
    # interpretation
    "filter_tiles": ("convlens.interpret.filters", "filter_tiles"),
    "FilterTiles": ("convlens.interpret.filters", "FilterTiles"),
    "unit_maps": ("convlens.interpret.units", "unit_maps"),
    "UnitMaps": ("convlens.interpret.units", "UnitMaps"),
    "top_units": ("convlens.interpret.units", "top_units"),
    "TopUnits": ("convlens.interpret.units", "TopUnits"),
    "match_region": ("convlens.interpret.units", "match_region"),
    "RegionMatch": ("convlens.interpret.units", "RegionMatch"),
    "class_maps": ("convlens.interpret.maps.registry", "class_maps"),
    "every_method": ("convlens.interpret.maps.registry", "every_method"),
    "ClassMaps": ("convlens.interpret.maps.base", "ClassMaps"),
    "faithfulness": ("convlens.interpret.faithfulness", "faithfulness"),
    "Faithfulness": ("convlens.interpret.faithfulness", "Faithfulness"),
    "score_methods": ("convlens.interpret.faithfulness", "score_methods"),
    "MethodScore": ("convlens.interpret.faithfulness", "MethodScore"),
    "ablate": ("convlens.interpret.ablation", "ablate"),
    "Ablation": ("convlens.interpret.ablation", "Ablation"),
    "fewest_units": ("convlens.interpret.ablation", "fewest_units"),
    "FewestUnits": ("convlens.interpret.ablation", "FewestUnits"),
    "SearchSettings": ("convlens.interpret.ablation", "SearchSettings"),
    "dissect": ("convlens.interpret.dissect", "dissect"),
    "Dissection": ("convlens.interpret.dissect", "Dissection"),
    "DissectSettings": ("convlens.interpret.dissect", "DissectSettings"),
    "Sharding": ("convlens.core.shards", "Sharding"),
    "ShardError": ("convlens.core.shards", "ShardError"),
    "attribute": ("convlens.interpret.maps.pixel", "attribute"),
    "Attribution": ("convlens.interpret.maps.pixel", "Attribution"),
    "infidelity": ("convlens.interpret.faithfulness", "infidelity"),
    "sensitivity_max": ("convlens.interpret.faithfulness", "sensitivity_max"),
    "visualize": ("convlens.interpret.visualize", "visualize"),
    "Visualization": ("convlens.interpret.visualize", "Visualization"),
    "VisualizeSettings": ("convlens.interpret.visualize", "VisualizeSettings"),
    "Objective": ("convlens.interpret.objectives", "Objective"),
    "concepts": ("convlens.interpret.concepts.discover", "concepts"),
    "Concepts": ("convlens.interpret.concepts.discover", "Concepts"),
    "ConceptSettings": ("convlens.interpret.concepts.discover", "ConceptSettings"),
    "tcav": ("convlens.interpret.concepts.tcav", "tcav"),
    "TCAVResult": ("convlens.interpret.concepts.tcav", "TCAVResult"),
    "model_randomisation": ("convlens.interpret.sanity", "model_randomisation"),
    "Randomisation": ("convlens.interpret.sanity", "Randomisation"),
    "RandomisationSettings": ("convlens.interpret.sanity", "RandomisationSettings"),
    "map_explainer": ("convlens.interpret.sanity", "map_explainer"),
    "road_curves": ("convlens.interpret.road", "road_curves"),
    "Road": ("convlens.interpret.road", "Road"),
    "RoadSettings": ("convlens.interpret.road", "RoadSettings"),
    # experiments and pictures
    "make_spec": ("convlens.sweep.spec", "make_spec"),
    "run_worker": ("convlens.sweep.worker", "run_worker"),
    "load_results": ("convlens.sweep.results", "load_results"),
    "build_report": ("convlens.render.report", "build_report"),
    "write_atlas": ("convlens.render.atlas", "write_atlas"),
}

__all__ = list(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        module, attr = _API[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'convlens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
