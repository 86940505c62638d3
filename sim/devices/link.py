"""A point-to-point link (PCIe, UFS host interface, CPU<->GPU) between two memories.

Modelled: per-direction bandwidth, each direction a separate :class:`FairShare` channel (full duplex:
opposite directions do not interfere; concurrent transfers in one direction share its bandwidth), and a fixed
latency per transfer that is a pure delay (not contended).

Not modelled: protocol overhead beyond what the profile's bandwidth already accounts for, DMA engine limits,
packet-level behaviour, pinned vs pageable host memory.
"""

from __future__ import annotations

import simpy

from sim.config.hardware import LinkSpec
from sim.devices.fairshare import FairShare
from sim.stats.recorder import Recorder


class Link:
    """Two fair-shared channels, ``ends[0] -> ends[1]`` (forward) and back (reverse)."""

    def __init__(self, env: simpy.Environment, name: str, spec: LinkSpec, recorder: Recorder | None = None):
        self.env = env
        self.name = name
        self.spec = spec
        self.recorder = recorder
        a, b = spec.ends
        self._channels = {
            (a, b): (FairShare(env, f"{name}:{a}->{b}"), spec.bandwidth_forward),
            (b, a): (FairShare(env, f"{name}:{b}->{a}"), spec.bandwidth_reverse),
        }
        self.bytes_moved = {pair: 0.0 for pair in self._channels}

    def channel(self, src: str, dst: str) -> FairShare:
        """The fair-share server carrying ``src -> dst`` (its name is the span track)."""
        return self._lookup(src, dst)[0]

    def transfer(self, src: str, dst: str, nbytes: float, tag: str = "xfer") -> simpy.Event:
        """Move ``nbytes`` from ``src`` to ``dst``; succeeds (value: seconds taken) when done. One span."""
        server, work_s = self._job(src, dst, nbytes)
        env, start_s = self.env, float(self.env.now)
        done = env.event()

        def result() -> float:
            self._finish(server, src, dst, nbytes, tag, start_s, env.now)
            return env.now - start_s

        if self.spec.latency > 0:
            env.timeout(self.spec.latency).callbacks.append(lambda _: server.submit(work_s, done, result))
        else:
            server.submit(work_s, done, result)
        return done

    def order_alone(self, src: str, dst: str, nbytes: float, start_s: float) -> tuple[float, float, bool]:
        """(end, instant the job enters its channel, entered from the latency timeout) of :meth:`transfer_alone`:
        jobs on different devices that end at the same instant complete in the order of this key (SimPy runs
        them in the order their completion timeouts were scheduled; a device called first wins a full tie)."""
        _, work_s = self._job(src, dst, nbytes)
        enter_s = self._enter_s(start_s)
        return FairShare.end_alone_s(enter_s, work_s), enter_s, self.spec.latency > 0

    def transfer_alone(self, src: str, dst: str, nbytes: float, start_s: float, tag: str = "xfer") -> float:
        """:meth:`transfer` started at ``start_s`` on an idle channel nothing else uses until it ends: the same
        bytes, span and channel accounting (:meth:`FairShare.run_alone`); returns the end time, without events."""
        server, work_s = self._job(src, dst, nbytes)
        end_s = server.run_alone(self._enter_s(start_s), work_s)
        self._finish(server, src, dst, nbytes, tag, float(start_s), end_s)
        return end_s

    def _enter_s(self, start_s: float) -> float:
        """When a transfer issued at ``start_s`` enters its channel: after the latency timeout (start + latency)."""
        return start_s + self.spec.latency if self.spec.latency > 0 else start_s

    def _job(self, src: str, dst: str, nbytes: float) -> tuple[FairShare, float]:
        """The channel and the seconds of exclusive service of a transfer (nbytes checked)."""
        server, bandwidth_Bps = self._lookup(src, dst)
        if not nbytes >= 0:
            raise ValueError(f"{self.name}: transfer nbytes(={nbytes!r}) must be >= 0")
        return server, nbytes / bandwidth_Bps

    def _finish(self, server: FairShare, src: str, dst: str, nbytes: float, tag: str, start_s: float, end_s: float):
        self.bytes_moved[(src, dst)] += nbytes
        if self.recorder is not None:
            self.recorder.span(server.name, tag, start_s, end_s, nbytes)

    def _lookup(self, src: str, dst: str) -> tuple[FairShare, float]:
        try:
            return self._channels[(src, dst)]
        except KeyError:
            raise ValueError(
                f"link {self.name!r} joins {self.spec.ends[0]!r} and {self.spec.ends[1]!r}, not {src!r} -> {dst!r}"
            ) from None
