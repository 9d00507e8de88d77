"""Placement: map pipeline stages and their tensor/data-parallel groups onto concrete ranks.

Order (Megatron's "tp-dp-pp"): tensor-parallel ranks are consecutive (so a TP group sits inside one
node on NVLink), data-parallel replicas of a stage come next, pipeline stages outermost. Stages on
a node group take that group's ranks; node groups are laid out in cluster order.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StagePlacement:
    stage: int
    group: int
    device: str
    tp: int
    ranks: tuple[tuple[int, ...], ...]  # [dp replica][tp rank] -> global rank


def group_rank_offsets(cluster) -> list[int]:
    offsets, total = [], 0
    for node, count in cluster.groups:
        offsets.append(total)
        total += node.devices_per_node * count
    return offsets


def place(cluster, dp: int, stage_groups: list[tuple[int, str, int]]) -> list[StagePlacement]:
    """Ranks of every stage. `stage_groups` lists (node group, device name, tp) per stage in order.

    >>> from cost_models.cluster import parse_cluster
    >>> p = place(parse_cluster("8xH100-SXM"), 2, [(0, "H100-SXM", 2), (0, "H100-SXM", 2)])
    >>> [s.ranks for s in p]
    [((0, 1), (2, 3)), ((4, 5), (6, 7))]
    """
    offsets = group_rank_offsets(cluster)
    used_in_group: dict[int, int] = {}
    out = []
    for stage, (group, device, tp) in enumerate(stage_groups):
        base = offsets[group] + used_in_group.get(group, 0)
        ranks = tuple(tuple(base + d * tp + t for t in range(tp)) for d in range(dp))
        used_in_group[group] = used_in_group.get(group, 0) + dp * tp
        out.append(StagePlacement(stage, group, device, tp, ranks))
    return out
