"""Run an experiment case for real: the simulator's own policy plans each step, this executes the plan's jobs.

The case is set up exactly as :func:`sim.engine.simulate.prepare_case` sets it up for a simulation (same policy
object, same activation source, same decisions), then, step by step, ``policy.plan(step)`` gives the step's job
graph and each job is done on this machine instead of on simulated devices:

- ``read``: the job's extents read from the flash image with ``O_DIRECT`` (:class:`~sim.real.odirect.DirectReader`,
  the profile's ``max_queue_depth`` threads). A read the next job waits for runs inline; one issued ahead (a
  pipeline's preload of the next layer) runs in an I/O thread while the main thread computes;
- ``copy``: the window's memory management, row copies in the real matrices (:class:`~sim.real.weights.ImageWeights`);
- ``run``: the layer's transformer block in the numpy kernels (:func:`sim.lab.kernels.block`) over exactly the FFN
  neurons the policy says it computes, with weights from DRAM or this step's reads (never from anywhere else:
  a weight the plan did not charge raises ``MissingExtentError``). The last layer's job also runs the LM head.

Each step's wall time is split as the simulator splits it: ``io_s`` (reading inline, waiting for a read issued
ahead, and unpacking read rows into place), ``memmgmt_s``, ``compute_s``, and ``other_s`` (the walk over the jobs
itself); the policy's planning (``plan_s``) is the simulator's work, timed apart and not part of the step.

Inputs: one request (batch 1), the activation trace's tokens: the prompt is the ``context_tokens`` tokens before
decode step 0's source token, decode step t feeds source token ``offset_tokens + t`` (teacher forcing, so the
trace's activations belong to the token being computed). A prompt with no prefill step
(``prefill_chunk_tokens: 0``) is run densely before the timed steps. Only CPU runs out of one memory are executed
(a GPU's transfers cannot be done here).
"""

from __future__ import annotations

import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sim.config.experiment import Case
from sim.engine.graph import Graph
from sim.engine.requests import Scheduler, Step
from sim.engine.simulate import Prepared, prepare_case
from sim.errors import ConfigError, SimError, located
from sim.lab.flash_image.reader import FlashImage, ReadBuffer
from sim.lab.kernels.forward import FfnSelector, Hooks, block
from sim.lab.kernels.model import LayerWeights, RunState
from sim.lab.kernels.ops import ffn_dense, matmul, rmsnorm
from sim.lab.kernels.sparse import ffn_sparse
from sim.layout import EMBEDDINGS, coalesce
from sim.models.profile import ATTENTION_OPS
from sim.real.odirect import DirectReader
from sim.real.weights import ImageWeights, WindowStep, join_buffers
from sim.traces.format import TraceReader

LAYER_TAG = re.compile(r"^L(\d+)\b")
READ_SLOTS = 4  # read buffers reused round-robin by layer: a layer's reads are dropped once it has computed, and
# a pipeline reads at most a layer or two ahead


@dataclass
class RealRun:
    """What a real run did: one row per timed step, its output tokens and what the reference needs to replay it."""

    steps: pd.DataFrame
    prompt: list[int]  # token ids of the prompt
    inputs: list[int]  # decode step t's input token
    outputs: list[int]  # decode step t's argmax
    replay: list[tuple[str, list[int], list[np.ndarray] | None]] = field(default_factory=list)  # per step: phase,
    # its input tokens, the FFN neurons each layer computed (None: all, densely)
    dense_prompt: bool = False  # the prompt ran densely before the first step (no prefill step)
    held_bytes: int = 0  # resident + window bytes in DRAM


def execute_case(case: Case, image_path: Path, progress=None) -> RealRun:
    """Execute ``case`` on this machine from the flash image at ``image_path``; see the module docstring."""
    try:
        return _Execution(case, image_path).run(progress)
    except SimError as err:
        raise located(err, str(case.path) if case.path else None, case.name) from None


def check_executable(case: Case, hardware: bool = True) -> None:
    """What a real run of ``case`` needs, checked before anything runs (one-line ConfigErrors naming the case);
    ``hardware``: also its hardware profile (not when calibrate will replace it)."""
    try:
        _check(case, hardware)
    except SimError as err:
        raise located(err, str(case.path) if case.path else None, case.name) from None


def _check(case: Case, hardware: bool = True) -> tuple[list[int], np.ndarray]:
    """The checks of :func:`check_executable`; returns the run's input tokens (:func:`_trace_tokens`)."""
    cfg, where = case.config, str(case.path or "experiment")
    if cfg.batch != 1 or cfg.n_requests != 1:
        raise ConfigError(where, "batch", "a real run executes one request (batch: 1, requests: 1)", cfg.batch)
    if hardware and (len(case.hardware.processors) != 1 or len(case.hardware.memories) != 1):
        raise ConfigError(where, "hardware", "a real run needs a one-memory CPU machine (calibrate's profile)",
                          case.hardware.name)  # fmt: skip
    if getattr(cfg.policy, "memory_management", True) is False:
        raise ConfigError(where, "policy.memory_management", "a real run manages its window's memory", False)
    if getattr(cfg.policy, "cache", "window") != "window":
        raise ConfigError(where, "policy.cache", "a real run moves its window's rows; lfu and lru are simulated only",
                          cfg.policy.cache)  # fmt: skip
    if cfg.layout.dtype not in (None, cfg.dtype):
        reason = "a real run reads its image at the experiment's dtype"
        raise ConfigError(where, "layout.dtype", reason, cfg.layout.dtype)
    return _trace_tokens(case)


def _trace_tokens(case: Case) -> tuple[list[int], np.ndarray]:
    """(prompt token ids, [decode_tokens] the source tokens decode steps feed), from the activation trace."""
    from sim.engine.activations import resolve_trace_path

    acts, cfg, where = case.config.activations, case.config, str(case.path or "experiment")
    if acts is None or not hasattr(acts, "path"):
        raise ConfigError(where, "activations", "a real run takes its input tokens from a trace", None)
    path = resolve_trace_path(acts.path, case.path.parent if case.path else None, where)
    prompt_n, decode_n, offset = int(cfg.context_tokens), int(cfg.decode_tokens), acts.offset_tokens
    if offset < prompt_n:
        reason = f"must be at least context_tokens ({prompt_n}): the prompt is the trace's tokens before it"
        raise ConfigError(where, "activations.offset_tokens", reason, offset)
    with TraceReader(path) as reader:
        if offset + decode_n > reader.n_tokens:
            reason = f"the trace has {reader.n_tokens} tokens; offset_tokens + decode_tokens must fit"
            raise ConfigError(where, "decode_tokens", reason, decode_n)
        ids = reader.read("token_id", offset - prompt_n, offset + decode_n).astype(np.int64)
    return ids[:prompt_n].tolist(), ids[prompt_n:]


class _Execution:
    def __init__(self, case: Case, image_path: Path):
        cfg = case.config
        where = str(case.path or "experiment")
        self.prompt, self.stream = _check(case)
        self.prep: Prepared = prepare_case(case, timeline=False, cache={})
        placement = self.prep.ctx.placement
        if len({placement.weights, placement.window, placement.stream, placement.compute}) != 1:
            raise ConfigError(where, "placement", "a real run computes out of one memory (no GPU)", placement.compute)
        policy = self.prep.policy
        if not all(hasattr(policy, m) for m in ("held", "ffn_neurons", "window_matrix")):
            raise ConfigError(where, "policy.name", "cannot be executed for real yet", cfg.policy.name)
        if getattr(getattr(policy, "config", None), "predictor", "none") not in ("none", "oracle"):
            reason = "a real run executes the oracle predictor (the trace's sets); a predictor's matmuls are not run"
            raise ConfigError(where, "policy.predictor", reason, policy.config.predictor)
        self.image = FlashImage.open(image_path)
        self._check_image(case, where)
        self.reader = DirectReader(image_path, case.hardware.flash.max_queue_depth)
        try:
            self.weights = ImageWeights(self.image, self.reader, cfg.dram_budget)
            window = policy.window_matrix()
            self.weights.load(policy.held(), None if window is None else window[0])
        except BaseException:
            self.reader.close()
            raise
        self.policy, self.case = policy, case
        self.wcfg = self.weights.cfg
        self.io_pool = ThreadPoolExecutor(1, thread_name_prefix="io")

    def _check_image(self, case: Case, where: str) -> None:
        cfg, man = case.config, self.image.manifest
        if man["model"]["name"] != case.model.name:
            raise ConfigError(where, "model", f"the image {self.image.path} holds {man['model']['name']}", cfg.model)
        if man["dtype"] != cfg.dtype:
            raise ConfigError(where, "dtype", f"the image {self.image.path} is {man['dtype']}", cfg.dtype)
        if man["layout"] != cfg.layout.name:
            raise ConfigError(where, "layout.name", f"the image {self.image.path} is {man['layout']}", cfg.layout.name)

    # ---- the run ------------------------------------------------------------------------------------------------
    def run(self, progress) -> RealRun:
        cfg = self.case.config
        state = RunState.new(self.wcfg, max(1, len(self.prompt) + len(self.stream)))
        sched = Scheduler(self.prep.requests, 1, cfg.prefill_chunk_tokens)
        dense_prompt = cfg.prefill_chunk_tokens == 0 and bool(self.prompt)
        if dense_prompt:
            self._dense_prompt(state)
        rows, outputs, replay = [], [], []
        try:
            while not sched.done:
                step = sched.next_step(float("inf"))
                t0 = time.perf_counter()
                graph = self.policy.plan(step)
                window = self._window_steps(step)
                plan_s = time.perf_counter() - t0
                tokens, pos = self._inputs(step)
                row, logits, neurons = self._step(step, graph, state, window, tokens, pos)
                rows.append({"step": step.index, "phase": step.phase, "plan_s": plan_s, **row})
                replay.append((step.phase, tokens.tolist(), neurons))
                if step.phase == "decode":
                    outputs.append(int(np.argmax(logits)))
                    if progress:
                        progress(1)
                sched.complete(step, 0.0)
        finally:
            self.io_pool.shutdown()
            self.reader.close()
        steps = pd.DataFrame(rows)
        return RealRun(steps, self.prompt, self.stream.tolist(), outputs, replay, dense_prompt, self.weights.held_bytes)

    def _inputs(self, step: Step) -> tuple[np.ndarray, np.ndarray]:
        """(token ids [n], positions [n]) of the step."""
        kv, n = step.kv_tokens[0], step.new_tokens[0]
        if step.phase == "prefill":
            return np.asarray(self.prompt[kv : kv + n]), np.arange(kv, kv + n)
        return np.asarray([self.stream[step.positions[0]]]), np.array([kv])

    def _window_steps(self, step: Step) -> list[WindowStep] | None:
        """Per layer, the rows the policy's window moved and appended in the step just planned (its bookkeeping)."""
        window = self.policy.window_matrix()
        if window is None or step.phase != "decode":
            return None
        return [self.weights.window_step(layer, rows) for layer, rows in enumerate(window[1])]

    def _step(self, step: Step, graph: Graph, state: RunState, window: list[WindowStep] | None,
              tokens: np.ndarray, pos: np.ndarray):  # fmt: skip
        """Do the step's jobs on its input ``tokens`` [n] at positions ``pos`` [n] -> (its row, the logits of a
        decode step, the FFN neurons each layer computed)."""
        w, n_layers = self.weights, self.wcfg.n_layers
        t_start = time.perf_counter()
        x = self._embed(tokens)  # [n, d]
        neurons = self.policy.ffn_neurons()
        moved: set[int] = set()
        issued: dict[int, int] = {}
        pending: dict[int, Future] = {}
        bufs: dict[int, list[ReadBuffer]] = {l: [] for l in range(n_layers)}
        spent = dict.fromkeys(("io_s", "unpack_s", "memmgmt_s", "compute_s"), 0.0)
        bytes0, moved0, req0 = self.reader.bytes_read, self.reader.bytes_moved, self.reader.requests
        logits = None
        for i, kind in enumerate(graph.kind):
            layer = self._layer_of(graph.tag[i])
            t0 = time.perf_counter()
            for dep in graph.after[i]:
                if dep in pending:
                    bufs[self._layer_of(graph.tag[dep])].append(pending.pop(dep).result())
            spent["io_s"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            if kind == "read":
                extents, merge = graph.payload[i]
                issued[layer] = issued.get(layer, 0) + 1
                slot = (layer % READ_SLOTS, issued[layer])  # the layer's first, second... read of the step
                if i + 1 < len(graph) and i in graph.after[i + 1]:  # the next job waits for it: read it now
                    bufs[layer].append(self.reader.read(extents, merge, slot))
                    spent["io_s"] += time.perf_counter() - t0
                else:
                    pending[i] = self.io_pool.submit(self.reader.read, extents, merge, slot)
            elif kind == "copy":
                w.window_moves(layer, window[layer])
                moved.add(layer)
                spent["memmgmt_s"] += time.perf_counter() - t0
            elif kind == "run":
                buf = join_buffers(bufs[layer])
                if window is not None:
                    if layer not in moved:  # rows moved although the plan charged no copy
                        w.window_moves(layer, window[layer])
                    t1 = time.perf_counter()
                    spent["memmgmt_s"] += t1 - t0
                    w.window_appends(layer, window[layer].appended, buf)
                    t0 = time.perf_counter()
                    spent["unpack_s"] += t0 - t1
                x = self._layer(layer, x, pos, state, buf, None if neurons is None else neurons[layer])
                if layer == n_layers - 1 and step.phase == "decode":
                    logits = self._lm_head(x, buf)
                bufs[layer] = []
                spent["compute_s"] += time.perf_counter() - t0
            else:
                raise SimError(f"a real run cannot do a {kind} job ({graph.tag[i]}): one memory, no links")
        state.pos += len(tokens)
        total_s = time.perf_counter() - t_start
        io_s = spent["io_s"] + spent["unpack_s"]
        row = {"total_s": total_s, "io_s": io_s, "unpack_s": spent["unpack_s"], "memmgmt_s": spent["memmgmt_s"],
               "compute_s": spent["compute_s"], "other_s": total_s - io_s - spent["memmgmt_s"] - spent["compute_s"],
               "flash_bytes": self.reader.bytes_read - bytes0, "flash_moved_bytes": self.reader.bytes_moved - moved0,
               "flash_requests": self.reader.requests - req0}  # fmt: skip
        return row, logits, neurons

    @staticmethod
    def _layer_of(tag: str) -> int:
        found = LAYER_TAG.match(tag)
        if found is None:
            raise SimError(f"a real run needs layer jobs tagged 'L<layer> ...' (got {tag!r})")
        return int(found.group(1))

    def _embed(self, tokens: np.ndarray) -> np.ndarray:
        """[n, d] float32 input embeddings: from the resident table, or the rows read directly (not charged by the
        simulator either: a few KB)."""
        table = self.weights.ops.get((EMBEDDINGS, "embed"))
        if table is not None:
            return table[tokens].astype(np.float32)
        ((off, _),) = self.weights.layout.op_extents(EMBEDDINGS, ["embed"])
        row = self.weights.layout.row_bytes
        ext = np.stack([off + tokens * row, np.full(len(tokens), row)], axis=1)
        buf = self.reader.read(ext, slot="embed")
        return np.stack([buf.bytes_of(int(o), row).view(self.weights.dtype) for o, _ in ext]).astype(np.float32)

    def _layer(self, layer: int, x, pos, state, buf, neurons: np.ndarray | None) -> np.ndarray:
        """One block: attention from DRAM or the reads, the FFN over ``neurons`` (None: all, densely). The FFN's rows
        come in parts (:meth:`ImageWeights.ffn`); with one part the block is exactly the reference's (bit for
        bit), with several the parts' outputs are summed (a hybrid's resident and streamed neurons)."""
        w = self.weights
        att = {op: w.op(layer, op, shape, buf) for op, shape in w.attention_shapes().items()}
        parts = w.ffn(layer, neurons, buf)
        first = parts[0]
        lw = LayerWeights(w.attn_norm[layer], att["q"], att["k"], att["v"], att["o"], w.ffn_norm[layer],
                          first["gate"], first["up"], first["down"].T)  # fmt: skip
        if len(parts) > 1:
            hooks = Hooks(ffn=lambda _layer, h: _ffn_sum(h, parts, neurons is None))
        elif neurons is not None:
            keep = [np.arange(len(neurons))] * x.shape[0]
            hooks = Hooks(ffn_selector=FfnSelector(lambda _l, _x, _a: keep, "pre"))
        else:
            hooks = Hooks()
        return block(self.wcfg, lw, w.inv_freq, state, layer, x, pos, hooks)

    def _lm_head(self, x: np.ndarray, buf: ReadBuffer | None) -> np.ndarray:
        w = self.weights
        table = w.op(EMBEDDINGS, "embed", (self.wcfg.vocab_size, self.wcfg.d_model), buf)
        return matmul(rmsnorm(x[-1:], w.output_norm, self.wcfg.norm_eps), table.astype(np.float32, copy=False))[0]

    def _dense_prompt(self, state: RunState) -> None:
        """The prompt through every layer densely (untimed): the KV cache a run with no prefill step starts from."""
        lay = self.weights.layout
        pos = np.arange(len(self.prompt))
        x = self._embed(np.asarray(self.prompt))
        for layer in range(self.wcfg.n_layers):
            ext = np.concatenate(
                [lay.op_extents(layer, ATTENTION_OPS), lay.neuron_extents(layer, np.arange(lay.n_neurons))]
            )
            buf = self.reader.read(coalesce(ext), keep=True)
            x = self._layer(layer, x, pos, state, buf, None)
        state.pos = len(self.prompt)


def _ffn_sum(x: np.ndarray, parts: list[dict[str, np.ndarray]], dense: bool) -> np.ndarray:
    """x [n, d] -> the FFN output summed over parts (each: gate, up, down rows [k, d])."""
    y = np.zeros_like(x)
    for part in parts:
        gate, up, down = (np.asarray(part[op], np.float32) for op in ("gate", "up", "down"))
        if dense:
            y += ffn_dense(x, gate, up, down.T)[0]
        else:
            idx = np.arange(len(gate))
            for t in range(x.shape[0]):
                y[t] += ffn_sparse(x[t], gate, up, down.T, idx)[0]
    return y
