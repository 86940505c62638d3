"""What KV-cache policies cost in accuracy, on the real model (``kind: kv_accuracy``; ``python -m sim run FILE``).

For every held-out prompt (real text from the corpus, ``context_tokens`` long) and every policy of
:mod:`sim.kv.selection`, SmolLM2 runs once with the numpy backend: the first ``context_tokens - eval_tokens``
positions attend fully (the prompt), the last ``eval_tokens`` positions attend through the policy (decoding over a
long cache, teacher-forced so errors do not compound across tokens but do across layers). Per policy it reports

* ``attn_rel_error``  ||policy attention - full attention|| / ||full attention|| of each layer's output on that
                      layer's own inputs, averaged over layers (and per layer in ``kv_layers.csv``);
* ``keys_fraction``   keys read per query / keys it could see (the bytes a step reads from the KV cache);
* ``ppl`` vs ``dense_ppl`` and ``agreement``: next-token perplexity over the evaluated positions and the share of
                      them whose argmax equals the full-attention model's;
* ``accepted_gamma{2,6}``: self-speculative decoding (TriForce style, one model): the policy's KV drafts gamma
                      tokens, full attention verifies; the mean number of drafted tokens accepted (:func:`accepted`);
* MagicPIG only: ``sampled_fraction`` (keys sampled by the hash tables among those outside sinks + window) beside
  ``closed_form_fraction``, the mean of u(theta) = 1 - (1-p^K)^L - L p^K (1-p^K)^(L-1) over the same real (q, k)
  angles (papers.md): the simulator's hashing against the paper's formula.

A needle prompt (a five-digit pass key stated once near the start, then ``needle_filler_tokens`` of unrelated
text, then the question) is decoded greedily under each policy: does the answer contain the key?

Layers listed in ``dense_layers`` keep full attention (MagicPIG keeps layers 0 and 16 dense). Writes
``kv_accuracy.csv``, ``kv_layers.csv``, ``kv_needle.csv``, ``config.yaml``, ``about.md``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import Field

from sim.config.base import StrictModel, load_yaml, validate
from sim.kv import lsh
from sim.kv.kivi import quantize_kv, quantized_tokens
from sim.kv.selection import KVPolicy, attend, label, select
from sim.lab import corpus

NEEDLE_KEY = "48213"
CHUNK_TOKENS = 1024  # prompt tokens prefilled together: an 8K prompt's attention never builds a T x T matrix
SPECULATION = (2, 6)  # draft lengths gamma (TriForce's gamma1 = 2, gamma2 = 6; papers.md)


class KVAccuracyConfig(StrictModel):
    kind: Literal["kv_accuracy"] = "kv_accuracy"
    name: str = "kv_accuracy"
    description: str = ""
    model: str = "smollm2-135m"
    policies: list[KVPolicy] = Field(min_length=1)
    context_tokens: int = Field(1024, ge=64, le=8192, description="prompt length (SmolLM2's window is 8192)")
    eval_tokens: int = Field(64, ge=1, description="last positions of each prompt that attend through the policy")
    contexts_per_task: int = Field(1, ge=1)
    tasks: list[str] | None = Field(None, description="corpus tasks (default: all)")
    dense_layers: list[int] = Field([], description="layers that keep full attention (MagicPIG: 0 and 16)")
    needle_filler_tokens: int = Field(0, ge=0, le=8000, description="0: no needle test")
    seed: int = Field(0, ge=0)


class PolicyAttention:
    """The ``Hooks.attention`` of one policy: full attention before ``start``, the policy from there on; records
    each layer's error against full attention, the keys read, and MagicPIG's sampled vs closed-form fraction."""

    def __init__(self, policy, n_layers: int, head_dim: int, start: int, dense_layers: list[int], seed: int):
        self.policy, self.start, self.dense = policy, start, set(dense_layers)
        rng = np.random.default_rng(seed)
        magic = policy.name == "magicpig"
        self.planes = [lsh.projections(rng, head_dim, policy.K, policy.L) if magic else None for _ in range(n_layers)]
        self.queries: list[list[np.ndarray]] = [[] for _ in range(n_layers)]  # per layer: q of every position
        self.error: list[list[float]] = [[] for _ in range(n_layers)]
        self.kept = self.seen = self.sampled = self.outside = self.expected = 0.0

    def __call__(self, layer: int, q: np.ndarray, k: np.ndarray, v: np.ndarray, pos: np.ndarray) -> np.ndarray:
        from sim.lab.kernels.ops import attention

        n, H, hd = q.shape
        KV = k.shape[1]
        self.queries[layer].append(q)
        full = attention(q, k, v, pos)  # [n, H*hd] the kernel's own causal attention
        e = np.flatnonzero(pos >= self.start)  # the rows that attend through the policy
        if layer in self.dense or self.policy.name == "full" or not len(e):
            return full
        if self.policy.name == "kivi":  # the cache as KIVI holds it when the evaluated rows begin
            p = self.policy
            k, v = quantize_kv(k, v, quantized_tokens(self.start, p.group, p.residual), p.bits, p.group)
        qe = q[e].reshape(len(e), KV, H // KV, hd).transpose(1, 2, 0, 3)  # [KV, g, e, hd]
        scores = np.matmul(qe, k.transpose(1, 2, 0)[:, None]).reshape(H, len(e), len(k)) / np.float32(np.sqrt(hd))
        acc = self._accumulated(layer, k, pos[e], hd) if self.policy.name == "h2o" else None
        keep, log_w = select(self.policy, q[e], k, pos[e], scores, acc, self.planes[layer])
        out = full.copy()
        out[e] = attend(scores, v, keep, log_w)
        self.error[layer].append(float(np.linalg.norm(out[e] - full[e]) / np.linalg.norm(full[e])))
        self.kept += float(keep.sum())
        self.seen += float(H * (pos[e] + 1).sum())
        if self.policy.name == "magicpig":
            self._closed_form(q[e], k, pos[e], keep)
        return out

    def _accumulated(self, layer: int, k: np.ndarray, q_pos: np.ndarray, hd: int) -> np.ndarray:
        """[H, n, T]: attention mass key t received (full attention) from the queries before each of q_pos (the
        evaluated rows, consecutive). Summed over query blocks of :data:`CHUNK_TOKENS`, so an 8K context never
        holds a T x T matrix."""
        q_all = np.concatenate(self.queries[layer])[: len(k)]  # [T, H, hd] every query so far
        first = int(q_pos[0])
        acc = np.zeros((q_all.shape[1], len(k)), np.float32)  # [H, T] mass from the queries before ``first``
        for lo in range(0, first, CHUNK_TOKENS):
            acc += self._probs(q_all[lo : min(lo + CHUNK_TOKENS, first)], k, lo, hd).sum(axis=1)
        p = self._probs(q_all[first : int(q_pos[-1]) + 1], k, first, hd)  # [H, n, T] the evaluated rows' own
        return acc[:, None, :] + np.cumsum(p, axis=1) - p  # strictly before each row

    @staticmethod
    def _probs(q: np.ndarray, k: np.ndarray, first: int, hd: int) -> np.ndarray:
        """[H, m, T] causal full-attention probabilities of queries q [m, H, hd] at positions first, first + 1, ..."""
        m, H = q.shape[:2]
        KV = k.shape[1]
        qg = q.reshape(m, KV, H // KV, hd).transpose(1, 2, 0, 3)  # [KV, g, m, hd]
        s = np.matmul(qg, k.transpose(1, 2, 0)[:, None]).reshape(H, m, len(k)) / np.float32(np.sqrt(hd))
        s = np.where(np.arange(len(k))[None, :] <= (first + np.arange(m))[:, None], s, -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        return p / p.sum(-1, keepdims=True)

    def _closed_form(self, q, k, q_pos, keep) -> None:
        cfg = self.policy
        H, KV = q.shape[1], k.shape[1]
        t = np.arange(len(k))
        outside = (
            (t[None, :] <= q_pos[:, None]) & (t[None, :] >= cfg.sinks) & (q_pos[:, None] - t[None, :] >= cfg.window)
        )
        qn = q / np.linalg.norm(q, axis=-1, keepdims=True)
        kn = k / np.linalg.norm(k, axis=-1, keepdims=True)
        for h in range(H):
            u = lsh.sample_probability(qn[:, h] @ kn[:, h // (H // KV)].T, cfg.K, cfg.L)  # [n, T]
            self.expected += float(u[outside].sum())
            self.sampled += float((keep[h] & outside).sum())
            self.outside += float(outside.sum())

    def summary(self) -> dict:
        errors = [np.mean(e) for e in self.error if e]
        row = {
            "attn_rel_error": float(np.mean(errors)) if errors else 0.0,
            "keys_fraction": self.kept / self.seen if self.seen else 1.0,
        }
        if self.policy.name == "magicpig" and self.outside:
            row |= {
                "sampled_fraction": self.sampled / self.outside,
                "closed_form_fraction": self.expected / self.outside,
            }
        return row


def _prompts(config: KVAccuracyConfig, tok) -> list[tuple[str, list[int]]]:
    """Held-out contexts of at least ``context_tokens`` tokens (shorter texts are skipped)."""
    seen: dict[str, int] = {}
    out = []
    for ctx in corpus.contexts("heldout", config.tasks):
        if seen.get(ctx.task, 0) >= config.contexts_per_task:
            continue
        ids = tok.encode(corpus.load(ctx).text)
        if len(ids) >= config.context_tokens:
            seen[ctx.task] = seen.get(ctx.task, 0) + 1
            out.append((f"{ctx.task}/{ctx.name}", ids[: config.context_tokens]))
    return out


def _needle(config: KVAccuracyConfig, tok) -> list[int]:
    filler = []
    for ctx in corpus.contexts("heldout", config.tasks):
        filler += tok.encode(corpus.load(ctx).text + "\n")
        if len(filler) >= config.needle_filler_tokens:
            break
    head = tok.encode(f"Remember this: the pass key is {NEEDLE_KEY}. The pass key is {NEEDLE_KEY}.\n\n")
    tail = tok.encode("\n\nQuestion: what is the pass key? Answer: the pass key is")
    return head + filler[: config.needle_filler_tokens] + tail


def run_kv_accuracy(path: str | Path, out: Path, log=print, progress: bool = True) -> Path:
    """Measure every policy of the experiment file at ``path`` into the folder ``out``."""
    from sim.lab.kernels import Hooks
    from sim.lab.modelfile import load_model, load_tokenizer, resolve_model_path

    config = validate(KVAccuracyConfig, load_yaml(path), path)
    log = log if progress else (lambda *_: None)
    model_path = resolve_model_path(config.model)
    cfg, w = load_model(model_path)
    tok = load_tokenizer(model_path)
    prompts = _prompts(config, tok)
    if not prompts:
        from sim.errors import ConfigError

        raise ConfigError(path, "context_tokens", "no held-out text of the corpus is that long", config.context_tokens)
    start = config.context_tokens - config.eval_tokens
    t0 = time.perf_counter()
    dense = [_evaluated(cfg, w, ids, start) for _, ids in prompts]  # [e, vocab]
    rows, layers, needles = [], [], []
    needle = _needle(config, tok) if config.needle_filler_tokens else None
    for policy in config.policies:
        name = label(policy)
        for (ctx_name, ids), ref in zip(prompts, dense, strict=True):
            hook = PolicyAttention(policy, cfg.n_layers, cfg.head_dim, start, config.dense_layers, config.seed)
            logits = _evaluated(cfg, w, ids, start, Hooks(attention=hook))
            nll = _nll(logits, ids[start:])
            agree = logits.argmax(1) == ref.argmax(1)  # [e] the policy's greedy token = full attention's
            rows.append({"policy": name, "context": ctx_name, "context_tokens": len(ids),
                         "eval_tokens": len(ids) - start, **hook.summary(),
                         "ppl": float(np.exp(nll.mean())), "dense_ppl": float(np.exp(_nll(ref, ids[start:]).mean())),
                         "agreement": float(agree[:-1].mean()),
                         **{f"accepted_gamma{g}": accepted(agree, g) for g in SPECULATION}})  # fmt: skip
            layers += [{"policy": name, "context": ctx_name, "layer": l, "attn_rel_error": float(np.mean(e))}
                       for l, e in enumerate(hook.error) if e]  # fmt: skip
            log(f"{name} {ctx_name}: error {rows[-1]['attn_rel_error']:.4f}, keys {rows[-1]['keys_fraction']:.3f}, "
                f"ppl {rows[-1]['ppl']:.3f} (dense {rows[-1]['dense_ppl']:.3f})")  # fmt: skip
        if needle is not None:
            hook = PolicyAttention(
                policy, cfg.n_layers, cfg.head_dim, len(needle) - 1, config.dense_layers, config.seed
            )
            answer = tok.decode(_greedy(cfg, w, needle, 8, Hooks(attention=hook)))
            needles.append({"policy": name, "prompt_tokens": len(needle), "answer": answer,
                            "found": NEEDLE_KEY in answer.replace(" ", "")})  # fmt: skip
            log(f"{name} needle ({len(needle)} tokens): {answer!r}")
    return _write(out, config, rows, layers, needles, prompts, time.perf_counter() - t0)


def accepted(agree: np.ndarray, gamma: int) -> float:
    """Self-speculative decoding with this policy's KV as the draft and full attention as the verifier (greedy):
    the mean number of the ``gamma`` drafted tokens the verifier accepts, from every evaluated position. An accepted
    prefix is the verifier's own, so token i of a draft is accepted iff the policy agrees at that position (teacher
    forcing is exact here)."""
    n = len(agree) - gamma + 1
    if n <= 0:
        return float("nan")
    runs = [int(np.argmin(np.append(agree[p : p + gamma], False))) for p in range(n)]  # leading agreements
    return float(np.mean(runs))


def _evaluated(cfg, w, ids: list[int], start: int, hooks=None) -> np.ndarray:
    """Logits [n - start, vocab] of the evaluated positions: the prompt before ``start`` prefilled in blocks of
    :data:`CHUNK_TOKENS` (no LM head: its logits are not used), then the evaluated positions together."""
    from sim.lab.kernels import RunState, prefill

    state = RunState.new(cfg, len(ids))
    for lo in range(0, start, CHUNK_TOKENS):
        prefill(cfg, w, state, ids[lo : min(lo + CHUNK_TOKENS, start)], hooks, last_only=True)
    return prefill(cfg, w, state, ids[start:], hooks)


def _greedy(cfg, w, prompt: list[int], n_new: int, hooks) -> list[int]:
    """Greedy continuation of ``prompt``, its first len - 1 tokens prefilled in blocks (as :func:`_evaluated`)."""
    from sim.lab.kernels import RunState, generate_greedy, prefill

    state = RunState.new(cfg, len(prompt) + n_new)
    for lo in range(0, len(prompt) - 1, CHUNK_TOKENS):
        prefill(cfg, w, state, prompt[lo : min(lo + CHUNK_TOKENS, len(prompt) - 1)], hooks, last_only=True)
    return generate_greedy(cfg, w, prompt[-1:], n_new, hooks, state=state)


def _nll(logits: np.ndarray, ids: list[int]) -> np.ndarray:
    """Next-token negative log-likelihood of ids[1:] under logits[:-1]."""
    z = logits[:-1] - logits[:-1].max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return -logp[np.arange(len(ids) - 1), ids[1:]]


def _write(out: Path, config, rows, layers, needles, prompts, elapsed_s: float) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config.model_dump(), sort_keys=False))
    for name, table in (("kv_accuracy", rows), ("kv_layers", layers), ("kv_needle", needles)):
        if table:
            pd.DataFrame(table).to_csv(out / f"{name}.csv", index=False)
    names = ", ".join(f"{n} ({len(ids)} tok)" for n, ids in prompts)
    (out / "about.md").write_text(
        f"# {config.name}\n\n{config.description}\n\nModel {config.model} run by the numpy backend; held-out "
        f"prompts (corpus split `heldout`): {names}. The last {config.eval_tokens} positions of each attend through "
        f"the policy, the earlier ones fully. Dense layers: {config.dense_layers or 'none'}. No trace file drives "
        f"this experiment: it runs the model itself. Run time {elapsed_s:.0f} s.\n"
    )
    return out / "kv_accuracy.csv"
