"""Calibrate the projection's ``gain_sigma`` so that LLM in a Flash's sliding window loads, per token, the
fraction of the FFN that App. C reports for OPT-6.7B (2.4% fresh with k = 4-5; the window then holds ~24%).

    python experiments/calibrate_projection.py [EXPERIMENT [CASE [TARGET_FRESH]]]

Defaults: experiments/lif_table2.yaml, case ``bundling``, 0.024. ``gain_sigma`` sets how differently the ~28
copies of each SmolLM2 neuron respond (sim/traces/projection.py): larger values concentrate the active set on
high-gain copies, so consecutive tokens share more neurons and the window loads fewer fresh ones. Fresh loads
fall monotonically with sigma; the script bisects on [0, 1.5] and prints the value experiment files quote in
``activations.gain_sigma``, with the window size and predicted fraction it gives (those two are predictions).
"""

from __future__ import annotations

import sys

from sim.config.experiment import load_experiment
from sim.engine.simulate import simulate_case


def neuron_fractions(path: str, case_name: str, sigma: float) -> dict[str, float]:
    """Mean fractions of the FFN (all layers) read fresh, resident and predicted per token at ``sigma``."""
    cases = load_experiment(path, {"activations.gain_sigma": sigma})
    case = next(c for c in cases if c.name == case_name)
    tokens = simulate_case(case, timeline=False).tokens
    n = case.model.n_layers * case.model.n_experts * case.model.d_ff
    return {k: float(tokens[f"neurons_{k}"].mean()) / n for k in ("read", "resident", "predicted", "true")}


def calibrate(path: str, case_name: str, target: float, lo: float = 0.0, hi: float = 1.5, steps: int = 7) -> dict:
    """Bisect sigma until the fresh fraction brackets ``target`` within (hi - lo) / 2**steps."""
    for _ in range(steps):
        mid = (lo + hi) / 2
        fresh = neuron_fractions(path, case_name, mid)["read"]
        print(f"  gain_sigma={mid:.4f} fresh={fresh:.4%}", file=sys.stderr)
        lo, hi = (mid, hi) if fresh > target else (lo, mid)
    sigma = round((lo + hi) / 2, 2)
    return {"gain_sigma": sigma, **neuron_fractions(path, case_name, sigma)}


if __name__ == "__main__":
    args = sys.argv[1:]
    path = args[0] if args else "experiments/lif_table2.yaml"
    case_name = args[1] if len(args) > 1 else "bundling"
    target = float(args[2]) if len(args) > 2 else 0.024
    result = calibrate(path, case_name, target)
    print(" ".join(f"{k}={v:.4g}" for k, v in result.items()))
