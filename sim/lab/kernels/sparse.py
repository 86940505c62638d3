"""Sparse kernels that read ONLY the weights / KV entries named by an explicit index array.

Each kernel gathers the rows/columns it may touch and nothing else, and can report what it gathered into a
:class:`Touched` counter. Each has a companion ``*_bytes(idx, cfg, dtype)`` giving the bytes the simulator
charges for the same indices, so tests can pin ``Touched.nbytes(dtype) == *_bytes(...)``:

==================  =================================================  ==============================
kernel              reads                                              bytes charged
==================  =================================================  ==============================
ffn_sparse          rows idx of gate and up, columns idx of down       k * 3 * d_model weights
down_sparse         columns idx of down (gate/up were dense)           k * d_model weights
matmul_in_sparse    columns idx of W [out, in] (ActiveFlow top-k)      k * out weights
attention_sparse    K and V of KV-cache positions idx (MagicPIG)       k * 2 * n_kv * hd values
==================  =================================================  ==============================

Indices are 1-D integer arrays of distinct entries (duplicates would be read twice and charged twice).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.lab.kernels.model import ModelConfig
from sim.lab.kernels.ops import silu, softmax
from sim.models.profile import dtype_bytes


@dataclass
class Touched:
    """Counts the weight/cache elements a kernel actually gathered, per name (e.g. ``down``)."""

    elements: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, gathered: np.ndarray) -> np.ndarray:
        self.elements[name] = self.elements.get(name, 0) + int(gathered.size)
        return gathered

    @property
    def total(self) -> int:
        return sum(self.elements.values())

    def nbytes(self, dtype: str) -> float:
        """Bytes of the gathered elements if stored as ``dtype`` (sim.models.profile.DTYPE_BITS)."""
        return dtype_bytes(dtype, self.total)


def _gather(touched: Touched | None, name: str, a: np.ndarray) -> np.ndarray:
    return a if touched is None else touched.add(name, a)


def ffn_sparse(
    x: np.ndarray, gate: np.ndarray, up: np.ndarray, down: np.ndarray, idx: np.ndarray, touched: Touched | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """SwiGLU FFN over neurons idx only ("pre" mode: predictor chose idx before gate/up).

    x [d], gate/up [f, d], down [d, f], idx [k] -> (y [d], act [k] = silu(gate_idx x) * (up_idx x)).
    """
    g = _gather(touched, "gate", gate[idx])  # [k, d]
    u = _gather(touched, "up", up[idx])  # [k, d]
    act = silu(g @ x) * (u @ x)  # [k]
    return down_sparse(act, down, idx, touched), act


def down_sparse(act_sel: np.ndarray, down: np.ndarray, idx: np.ndarray, touched: Touched | None = None) -> np.ndarray:
    """Down projection over neurons idx ("post" mode): act_sel [k] (= act[idx]), down [d, f] -> y [d]."""
    dn = _gather(touched, "down", down[:, idx])  # [d, k]
    return dn @ act_sel


def matmul_in_sparse(x: np.ndarray, w: np.ndarray, idx: np.ndarray, touched: Touched | None = None) -> np.ndarray:
    """y = W[:, idx] @ x[idx]: a linear layer over a subset of input channels. x [in], w [out, in] -> [out]."""
    cols = _gather(touched, "w", w[:, idx])  # [out, k]
    return cols @ x[idx]


def attention_sparse(
    q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, idx: np.ndarray, touched: Touched | None = None
) -> np.ndarray:
    """One query over KV positions idx only: q [H, hd], k/v_cache [T, KV, hd], idx [m] -> [H*hd].

    Softmax is renormalised over the selected positions (causality is the caller's job: idx <= query pos).
    """
    H, hd = q.shape
    k = _gather(touched, "k", k_cache[idx])  # [m, KV, hd]
    v = _gather(touched, "v", v_cache[idx])  # [m, KV, hd]
    KV = k.shape[1]
    qg = q.reshape(KV, H // KV, hd)  # [KV, g, hd]
    p = softmax(np.einsum("kgd,mkd->kgm", qg, k) / np.float32(np.sqrt(hd)), axis=-1)  # [KV, g, m]
    return np.einsum("kgm,mkd->kgd", p, v).reshape(H * hd).astype(np.float32)


# ---- bytes the simulator charges for the same indices --------------------------------------------------------
def ffn_sparse_bytes(idx: np.ndarray, cfg: ModelConfig, dtype: str) -> float:
    """k neurons x (gate row + up row + down column) = k * 3 * d_model weights."""
    return dtype_bytes(dtype, len(idx) * 3 * cfg.d_model)


def down_sparse_bytes(idx: np.ndarray, cfg: ModelConfig, dtype: str) -> float:
    return dtype_bytes(dtype, len(idx) * cfg.d_model)


def matmul_in_sparse_bytes(idx: np.ndarray, n_out: int, dtype: str) -> float:
    return dtype_bytes(dtype, len(idx) * n_out)


def attention_sparse_bytes(idx: np.ndarray, cfg: ModelConfig, dtype: str) -> float:
    """K and V of each selected position in one layer: k * 2 * n_kv * hd values."""
    return dtype_bytes(dtype, len(idx) * 2 * cfg.kv_dim)
