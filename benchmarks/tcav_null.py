"""How often TCAV calls a random "concept" significant (issue 41's acceptance: at most 5
of 100 trials at 0.05): 100 trials of 20 random FashionMNIST test images posing as a
concept against 10 random sets of 20, on the shipped model's ``features``, with
convlens's test and with Kim et al.'s two-sample t-test on the same CAVs.

    uv run python benchmarks/tcav_null.py            # SGD CAVs (captum's settings)
    uv run python benchmarks/tcav_null.py --method fastcav
"""

from __future__ import annotations

import argparse
import time

from tests.interpret.test_tcav import random_concept_trials

from convlens.core.device import machine_info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="sgd", choices=("sgd", "logistic", "fastcav"))
    parser.add_argument("--trials", type=int, default=100)
    args = parser.parse_args()
    start = time.perf_counter()
    ours, theirs = random_concept_trials(args.method, args.trials)
    info = machine_info()
    print(f"{args.method} CAVs, {args.trials} trials ({time.perf_counter() - start:.0f} s, "
          f"{info['processor']}, torch {info['torch']})")  # fmt: skip
    print(f"significant at 0.05: convlens {ours}, Kim et al.'s two-sample t-test {theirs}")


if __name__ == "__main__":
    main()
