"""SimHash locality-sensitive hashing as MagicPIG uses it (Chen et al., arXiv 2410.16179).

L tables of K random hyperplanes each: a vector's code in table l is the K sign bits of its projections onto that
table's hyperplanes. A query and a key *collide* in table l when their codes are equal; MagicPIG samples a key when
it collides with the query in at least two of the L tables. For vectors at angle theta one hyperplane separates
them with probability theta / pi, so with ``p = 1 - theta / pi``:

    P(collide in one table)  = p^K
    u = P(sampled)           = 1 - (1 - p^K)^L - L p^K (1 - p^K)^(L-1)          (papers.md, MagicPIG)

and MagicPIG weights a sampled key's softmax term by 1 / u (importance sampling).
"""

from __future__ import annotations

import numpy as np

MAX_BITS = 16  # codes are stored as uint16


def projections(rng: np.random.Generator, head_dim: int, K: int, L: int) -> np.ndarray:
    """[head_dim, L*K] float32 Gaussian hyperplanes (their normals), one column per bit."""
    if not 1 <= K <= MAX_BITS:
        raise ValueError(f"K must be 1..{MAX_BITS} bits (got {K})")
    return rng.standard_normal((head_dim, L * K)).astype(np.float32)


def codes(x: np.ndarray, planes: np.ndarray, K: int) -> np.ndarray:
    """x [..., head_dim] -> [..., L] uint16: the K sign bits per table, as one integer."""
    bits = (x @ planes) > 0  # [..., L*K]
    bits = bits.reshape(*bits.shape[:-1], -1, K)  # [..., L, K]
    weights = (1 << np.arange(K, dtype=np.uint32)).astype(np.uint32)  # [K]
    return (bits.astype(np.uint32) @ weights).astype(np.uint16)


def collisions(q_codes: np.ndarray, k_codes: np.ndarray) -> np.ndarray:
    """q_codes [n, L], k_codes [T, L] -> [n, T] int: tables in which query i and key t share a bucket."""
    n, T = len(q_codes), len(k_codes)
    out = np.zeros((n, T), np.int16)
    for l in range(q_codes.shape[1]):  # one table at a time: [n, T] per table, never [n, T, L]
        out += q_codes[:, l, None] == k_codes[None, :, l]
    return out


def sample_probability(cos: np.ndarray, K: int, L: int) -> np.ndarray:
    """u(theta) for cosines ``cos`` (any shape): the probability a key is sampled (collides in >= 2 of L tables)."""
    theta = np.arccos(np.clip(cos, -1.0, 1.0))
    pk = (1.0 - theta / np.pi) ** K
    return 1.0 - (1.0 - pk) ** L - L * pk * (1.0 - pk) ** (L - 1)
