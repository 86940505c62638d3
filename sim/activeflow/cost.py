"""ActiveFlow's analytic cost model (§4.1, as papers.md states it with the paper's typos fixed) and its greedy
search, evaluated beside every simulated ActiveFlow run.

    T_decode  = T_load + T_overlap + T_comp,  subject to M <= M_max
    T_load    = M_cl (1 - hr) / BW_flash_small          T_comp = M_cl / BW_mem
    T_overlap = T_onload + max(T_preload, T_comp)
    T_onload  = S_l (1 - sp)(1 - hr)(1 - si) / BW_flash_small
    T_preload = M_cl (1 - hr) / BW_flash_large
    M = M_cl + M_cache + M_kv,  M_cl = S_l (1 - sp) N

Per group of N layers: the first group loads serially (T_load), every later group overlaps its preload with the
previous group's compute and pays its own on-demand misses, and the last group computes (T_comp). We read the
per-layer T_onload as paid by each of the N layers of a group, so a token costs

    T_token = T_load + (G - 1) (N T_onload + max(T_preload, T_comp)) + T_comp,   G = ceil(L / N)

(N = 0, serial loading: every layer reads its active weights on demand, T_token = L (T_onload' + T_comp') with
si = 0 and one layer per group). BW_flash_small is the device's throughput at one channel's column, BW_flash_large
at N columns (the op -> channel -> layer extent), both at the device's queue depth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class CostInputs:
    layer_bytes: float  # S_l: one layer's weights on flash
    n_layers: int
    sparsity: float  # sp
    group: int  # N (0: serial)
    hit_rate: float  # hr
    precision: float  # si: the share of a layer's active channels its group's preload predicted
    bw_small_Bps: float  # noqa: N815 -- flash throughput at one column
    bw_large_Bps: float  # noqa: N815 -- at a group's column
    bw_mem_Bps: float  # noqa: N815 -- compute (memory-bound GEMV over the active weights)


def token_s(c: CostInputs) -> dict[str, float]:
    """{T_token, T_load, T_onload, T_preload, T_comp, T_overlap} in seconds (per group; T_token per token)."""
    active = c.layer_bytes * (1.0 - c.sparsity) * (1.0 - c.hit_rate)  # one layer's active bytes not cached
    if c.group <= 0:
        onload = active / c.bw_small_Bps
        comp = c.layer_bytes * (1.0 - c.sparsity) / c.bw_mem_Bps
        return {"T_token": c.n_layers * (onload + comp), "T_load": 0.0, "T_onload": onload, "T_preload": 0.0,
                "T_comp": comp, "T_overlap": 0.0}  # fmt: skip
    m_cl = c.layer_bytes * (1.0 - c.sparsity) * c.group
    load = m_cl * (1.0 - c.hit_rate) / c.bw_small_Bps
    comp = m_cl / c.bw_mem_Bps
    onload = active * (1.0 - c.precision) / c.bw_small_Bps
    preload = m_cl * (1.0 - c.hit_rate) / c.bw_large_Bps
    overlap = c.group * onload + max(preload, comp)
    groups = math.ceil(c.n_layers / c.group)
    return {"T_token": load + (groups - 1) * overlap + comp, "T_load": load, "T_onload": onload,
            "T_preload": preload, "T_comp": comp, "T_overlap": overlap}  # fmt: skip


def greedy_group(make: callable, max_group: int = 16, min_gain: float = 0.02) -> int:
    """ActiveFlow's greedy choice of N: grow N from 1 until T_preload <= T_comp or the next N gains less than
    ``min_gain`` of the token time. ``make(N)`` returns the :class:`CostInputs` at group size N."""
    best = 1
    for n in range(2, max_group + 1):
        now, nxt = token_s(make(best)), token_s(make(n))
        if now["T_preload"] <= now["T_comp"] or (now["T_token"] - nxt["T_token"]) < min_gain * now["T_token"]:
            break
        best = n
    return best
