"""Which cached keys a query attends to: the KV-cache policies, as pure numpy over one layer's real q and k.

Every policy answers, for a block of n queries at positions ``q_pos`` [n] over the T cached keys of one layer,

    keep [H, n, T] bool      the keys each query head attends to (always causal: t <= q_pos)
    log_weight [H, n, T]     added to the kept keys' scores before the softmax (MagicPIG's 1/u importance
                             weights), or None

so the attention output is ``softmax(scores + log_weight over kept keys) @ V`` -- the numpy backend computes it
(:mod:`sim.lab.kv_accuracy`), and the kept count per query is what a policy reads from the KV cache per step (the
simulator's bytes). Policies (``budget`` is a fraction of the keys a query could see):

``full``       every key.
``streaming``  StreamingLLM (arXiv 2309.17453): ``sinks`` first tokens + the last ``window`` tokens.
``h2o``        H2O (arXiv 2306.14048): the last ``recent`` tokens + the heavy hitters -- keys with the largest
               attention mass accumulated over the earlier queries -- up to ``budget``. Accumulated here from the
               full attention of the earlier queries (the best case of H2O's greedy eviction, which accumulates
               only over the keys it kept).
``topk``       oracle top-k: the ``budget`` keys of largest score for this very query (needs every score: a
               bound, not a system).
``quest``      Quest (arXiv 2406.10774): keys in pages of ``page_tokens``; a page's score bound is
               sum_d max(q_d min_d, q_d max_d) over its keys' per-dimension min and max; the best pages up to
               ``budget`` (the query's own page always).
``magicpig``   MagicPIG (arXiv 2410.16179): ``sinks`` + ``window`` tokens exactly, the rest sampled by SimHash
               (K bits, L tables, :mod:`sim.kv.lsh`) when the key collides with the query in >= 2 tables,
               weighted by 1/u(theta) (the key's sampling probability at its angle with the query).
``kivi``       KIVI (arXiv 2402.02750): every key, but the cache quantized to ``bits`` (:mod:`sim.kv.kivi`): the
               caller dequantizes K and V before the scores; as a selection it is ``full``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from sim.config.base import StrictModel
from sim.kv import lsh

Budget = Annotated[float, Field(gt=0, le=1, description="fraction of the keys a query could see")]


class Full(StrictModel):
    name: Literal["full"]


class Streaming(StrictModel):
    name: Literal["streaming"]
    sinks: int = Field(4, ge=0, description="first tokens always kept (StreamingLLM: 4)")
    window: int = Field(64, ge=1, description="most recent tokens kept")


class H2O(StrictModel):
    name: Literal["h2o"]
    budget: Budget = 0.2  # H2O: 20% heavy-hitter budget (papers.md)
    recent: int = Field(64, ge=0, description="most recent tokens kept besides the heavy hitters")


class TopK(StrictModel):
    name: Literal["topk"]
    budget: Budget = 0.05


class Quest(StrictModel):
    name: Literal["quest"]
    budget: Budget = 0.05
    page_tokens: int = Field(16, ge=1)


class MagicPIG(StrictModel):
    name: Literal["magicpig"]
    K: int = Field(10, ge=1, le=lsh.MAX_BITS, description="bits per table")
    L: int = Field(150, ge=2, le=1024, description="tables")
    sinks: int = Field(4, ge=0)
    window: int = Field(64, ge=0)


class Kivi(StrictModel):
    name: Literal["kivi"]
    bits: int = Field(2, ge=1, le=8, description="bits per quantized key and value (KIVI: 2 or 4)")
    group: int = Field(32, ge=1, le=4096, description="tokens per key group (per channel); dims per value group")
    residual: int = Field(128, ge=0, description="most recent tokens kept in full precision")


KVPolicy = Annotated[Full | Streaming | H2O | TopK | Quest | MagicPIG | Kivi, Field(discriminator="name")]


def label(policy: StrictModel) -> str:
    """A short name of a policy and its knobs, e.g. ``magicpig K=10 L=150 sinks=4 window=64``."""
    knobs = {k: v for k, v in policy.model_dump().items() if k != "name"}
    return " ".join([policy.name, *(f"{k}={v:g}" for k, v in knobs.items())])


def select(
    policy: StrictModel,
    q: np.ndarray,
    k: np.ndarray,
    q_pos: np.ndarray,
    scores: np.ndarray,
    acc: np.ndarray | None = None,
    planes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """keep [H, n, T], log_weight [H, n, T] | None for queries q [n, H, hd] over keys k [T, KV, hd].

    ``scores`` [H, n, T]: q.k / sqrt(hd) (any value beyond causality); ``acc`` [H, n, T]: for ``h2o``, the
    attention mass each key received from the queries before each of these; ``planes``: for ``magicpig``,
    :func:`sim.kv.lsh.projections` of this layer."""
    H, n, T = scores.shape
    t = np.arange(T)
    causal = t[None, :] <= q_pos[:, None]  # [n, T]
    seen = (q_pos + 1).astype(np.int64)  # [n] keys each query could see
    if policy.name in ("full", "kivi"):
        return np.broadcast_to(causal, (H, n, T)).copy(), None
    if policy.name == "streaming":
        return np.broadcast_to(_sink_window(t, q_pos, policy.sinks, policy.window) & causal, (H, n, T)).copy(), None
    if policy.name == "topk":
        return _top(np.where(causal, scores, -np.inf), np.ceil(policy.budget * seen)), None
    if policy.name == "h2o":
        recent = _sink_window(t, q_pos, 0, policy.recent) & causal  # [n, T]
        extra = np.maximum(np.ceil(policy.budget * seen) - recent.sum(-1), 0)  # [n] heavy hitters to add
        rank = np.where(causal & ~recent, acc, -np.inf)
        return _top(rank, np.broadcast_to(extra, (H, n))) | recent, None
    if policy.name == "quest":
        return _quest(policy, q, k, q_pos, causal), None
    if policy.name == "magicpig":
        return _magicpig(policy, q, k, q_pos, causal, planes)
    raise ValueError(f"unknown KV policy {policy.name!r}")


def _sink_window(t: np.ndarray, q_pos: np.ndarray, sinks: int, window: int) -> np.ndarray:
    """[n, T]: key t is one of the first ``sinks`` or within the last ``window`` positions of query i."""
    return (t[None, :] < sinks) | (q_pos[:, None] - t[None, :] < window)


def _top(rank: np.ndarray, count: np.ndarray) -> np.ndarray:
    """[H, n, T] bool: per row the ``count`` [n] or [H, n] largest finite entries of ``rank``."""
    order = np.argsort(-rank, axis=-1, kind="stable")  # [H, n, T] best first
    position = np.empty_like(order)
    np.put_along_axis(position, order, np.arange(rank.shape[-1])[None, None, :], axis=-1)
    return (position < np.asarray(count)[..., None]) & np.isfinite(rank)


def _quest(policy: Quest, q: np.ndarray, k: np.ndarray, q_pos: np.ndarray, causal: np.ndarray) -> np.ndarray:
    n, H, hd = q.shape
    T, KV, _ = k.shape
    P = policy.page_tokens
    pages = -(-T // P)
    padded = np.concatenate([k, np.repeat(k[-1:], pages * P - T, axis=0)]).reshape(pages, P, KV, hd)
    lo, hi = padded.min(axis=1), padded.max(axis=1)  # [pages, KV, hd]
    qg = q.reshape(n, KV, H // KV, hd)  # [n, KV, g, hd]
    bound = np.maximum(np.einsum("nkgd,pkd->kgnp", qg, lo), np.einsum("nkgd,pkd->kgnp", qg, hi)).reshape(H, n, pages)
    page_of_query = q_pos // P  # [n]
    page = np.arange(pages)
    bound = np.where(page[None, :] <= page_of_query[:, None], bound, -np.inf)  # causal pages
    own = np.finfo(np.float32).max  # finite: _top keeps only finite ranks
    bound = np.where(page[None, :] == page_of_query[:, None], own, bound)  # the query's own page always
    chosen = _top(bound, np.maximum(np.ceil(policy.budget * (q_pos + 1) / P), 1))  # [H, n, pages]
    return np.repeat(chosen, P, axis=-1)[..., :T] & causal


def _magicpig(
    policy: MagicPIG, q: np.ndarray, k: np.ndarray, q_pos: np.ndarray, causal: np.ndarray, planes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    n, H, hd = q.shape
    T, KV, _ = k.shape
    g = H // KV
    exact = _sink_window(np.arange(T), q_pos, policy.sinks, policy.window) & causal  # [n, T]
    keep = np.empty((H, n, T), bool)
    log_weight = np.zeros((H, n, T), np.float32)
    k_codes = lsh.codes(k, planes, policy.K)  # [T, KV, L]
    q_codes = lsh.codes(q, planes, policy.K)  # [n, H, L]
    k_unit = k / np.maximum(np.linalg.norm(k, axis=-1, keepdims=True), 1e-12)  # [T, KV, hd]
    q_unit = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)  # [n, H, hd]
    for h in range(H):
        sampled = (lsh.collisions(q_codes[:, h], k_codes[:, h // g]) >= 2) & causal & ~exact  # [n, T]
        cos = q_unit[:, h] @ k_unit[:, h // g].T  # [n, T]
        u = lsh.sample_probability(cos, policy.K, policy.L)
        keep[h] = exact | sampled
        log_weight[h] = np.where(sampled, -np.log(np.maximum(u, 1e-30)), 0.0)
    return keep, log_weight


def attend(scores: np.ndarray, v: np.ndarray, keep: np.ndarray, log_weight: np.ndarray | None) -> np.ndarray:
    """Attention output [n, H*hd] from scores [H, n, T] over the kept keys; v [T, KV, hd]."""
    H, n, T = scores.shape
    KV, hd = v.shape[1], v.shape[2]
    z = np.where(keep, scores + (0.0 if log_weight is None else log_weight), -np.inf)
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)  # [H, n, T]
    out = np.matmul(p.reshape(KV, H // KV, n, T), v.transpose(1, 0, 2)[:, None])  # [KV, g, n, hd]
    return out.transpose(2, 0, 1, 3).reshape(n, H * hd).astype(np.float32)
