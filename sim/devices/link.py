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


class Link:
    """Two fair-shared channels, ``ends[0] -> ends[1]`` (forward) and back (reverse)."""

    def __init__(self, env: simpy.Environment, name: str, spec: LinkSpec):
        self.env = env
        self.name = name
        self.spec = spec
        a, b = spec.ends
        self._channels = {
            (a, b): (FairShare(env, f"{name}:{a}->{b}"), spec.bandwidth_forward),
            (b, a): (FairShare(env, f"{name}:{b}->{a}"), spec.bandwidth_reverse),
        }

    @property
    def directions(self) -> list[tuple[str, str]]:
        return list(self._channels)

    def channel(self, src: str, dst: str) -> FairShare:
        """The fair-share server carrying ``src -> dst`` (its name is the span track)."""
        return self._lookup(src, dst)[0]

    def service_s(self, src: str, dst: str, nbytes: float) -> tuple[float, float]:
        """(latency, seconds of exclusive transfer) of moving ``nbytes`` from ``src`` to ``dst`` alone."""
        _, bandwidth_Bps = self._lookup(src, dst)
        if not nbytes >= 0:
            raise ValueError(f"{self.name}: transfer nbytes(={nbytes!r}) must be >= 0")
        return self.spec.latency, nbytes / bandwidth_Bps

    def transfer(self, src: str, dst: str, nbytes: float) -> simpy.Event:
        """Move ``nbytes`` from ``src`` to ``dst``: the latency (a pure delay), then the transfer as a FairShare
        job on that direction's channel. The event succeeds when it is done."""
        server = self.channel(src, dst)
        latency_s, work_s = self.service_s(src, dst, nbytes)
        done = self.env.event()
        if latency_s > 0:
            self.env.timeout(latency_s).callbacks.append(lambda _: server.submit(work_s, done))
        else:
            server.submit(work_s, done)
        return done

    def _lookup(self, src: str, dst: str) -> tuple[FairShare, float]:
        try:
            return self._channels[(src, dst)]
        except KeyError:
            raise ValueError(
                f"link {self.name!r} joins {self.spec.ends[0]!r} and {self.spec.ends[1]!r}, not {src!r} -> {dst!r}"
            ) from None
