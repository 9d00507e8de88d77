"""The workload strategies by name, and which one answers a request (`passes.strategy` is the interface).

>>> strategy_for("train", "4xcpu").name, strategy_for("decode", "8xH100-SXM").name
('train', 'inference')
>>> strategy_for("chat", "8xH100-SXM").name, strategy_for("chat", "H100-SXM,L4").name
('serve', 'fleet')
"""

from __future__ import annotations

from passes.fleet_strategy import FleetStrategy
from passes.inference_strategy import InferenceStrategy
from passes.serving_strategy import ServingStrategy
from passes.strategy import Strategy
from passes.train_strategy import TrainingStrategy

STRATEGIES: dict[str, Strategy] = {s.name: s for s in (TrainingStrategy(), InferenceStrategy(), ServingStrategy(),
                                                       FleetStrategy())}


def strategy_for(workload: str, cluster_spec: str) -> Strategy:
    """A comma-separated cluster is a list of GPU types to buy (fleet); else by the workload's kind."""
    if "," in cluster_spec:
        return STRATEGIES["fleet"]
    if workload == "train":
        return STRATEGIES["train"]
    if workload in ("prefill", "decode"):
        return STRATEGIES["inference"]
    return STRATEGIES["serve"]


def strategy_of_plan(kind: str, phase: str | None) -> Strategy:
    """The strategy that made a recorded plan (decision kind, and phase for inference plans)."""
    if kind in ("train", "fleet"):
        return STRATEGIES[kind]
    return STRATEGIES["serve" if phase == "serve" else "inference"]
