"""The effect figures of feature visualisation on the shipped fashion-cnn, defaults,
256 steps, seed 0 (what tests/interpret/test_visualize.py guards):

- all 128 units of ``features``: the share of live units reaching 1.5x their maximum
  spatial-mean activation over the 10,000 test images, and the median ratio;
- negated, on the signed ``features.2.1.bn``: the share below their test-set minimum;
- diversity, 16 units (every 8th), 4 images each: the drop of the mean pairwise Gram
  similarity against diversity weight 0, and the activation kept.

    uv run python benchmarks/visualize_effect.py
"""

from __future__ import annotations

from convlens import models
from convlens.data.sources import FashionSplit
from convlens.interpret import visualize as v
from convlens.interpret.objectives import channel, diversity


def main() -> None:
    lm = models.load("fashion-cnn")
    model, p = lm.model, lm.preprocessing
    units = list(range(128))
    test = FashionSplit("test")
    hi, _ = v.dataset_extremes(model, test, "features", units)
    up = v.visualize(model, channel("features", units), p)
    live = [k for k in units if k not in up.dead and hi[k] > 0]
    ratio = up.activation[live, 0] / hi[live]
    print(f"features: {float((ratio >= 1.5).float().mean()):.0%} of {len(live)} live units "
          f"reach 1.5x their test maximum (median {float(ratio.median()):.2f}x)")  # fmt: skip
    _, lo = v.dataset_extremes(model, test, "features.2.1.bn", units)
    down = v.visualize(model, -channel("features.2.1.bn", units), p)
    below = float((down.activation[:, 0] < lo).float().mean())
    print(f"features.2.1.bn, negated: {below:.0%} of units below their test minimum")
    some = list(range(0, 128, 8))
    four = v.VisualizeSettings(images=4)
    same = v.visualize(model, channel("features", some), p, four)
    varied = v.visualize(model, channel("features", some) - 0.05 * diversity("features"), p, four)
    assert same.diversity_similarity is not None and varied.diversity_similarity is not None
    drop = float(same.diversity_similarity.mean() - varied.diversity_similarity.mean())
    kept = float((varied.activation.mean(1) / same.activation.mean(1)).mean())
    print(
        f"diversity 4 x 16 units, weight 0.05: Gram similarity {drop:.2f} lower, "
        f"{kept:.0%} of the activation kept"
    )


if __name__ == "__main__":
    main()
