"""Hardware profile schema: flash, memories, links and processors of one machine.

A profile file lives in ``hardware_profiles/NAME.yaml``. ``extends: OTHER`` deep-merges the profile
over OTHER so a variant states only what differs. Every number in a profile carries a comment naming its
source (paper table, datasheet or the arithmetic); ``tests/test_profiles.py`` enforces that.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sim.config.base import BandwidthBps, Bytes, Flops, Seconds, StrictModel

Dtype = Literal["fp32", "fp16", "bf16", "int8", "q8_0", "q4_0", "q4_1"]


def _increasing(values: list) -> bool:
    return all(a < b for a, b in zip(values, values[1:], strict=False))


class FlashCurve(StrictModel):
    """Read throughput measured at each (queue depth, chunk size); interpolated in log-log space."""

    chunk_sizes: list[Bytes] = Field(min_length=1)
    queue_depths: list[int] = Field(min_length=1)
    throughput: list[list[BandwidthBps]] = Field(description="[queue_depth][chunk_size], B/s")

    @model_validator(mode="after")
    def _shape(self) -> FlashCurve:
        if not _increasing(self.chunk_sizes) or min(self.chunk_sizes) <= 0:
            raise ValueError(f"chunk_sizes must be positive and strictly increasing (got {self.chunk_sizes})")
        if not _increasing(self.queue_depths) or min(self.queue_depths) < 1:
            raise ValueError(f"queue_depths must be >= 1 and strictly increasing (got {self.queue_depths})")
        if len(self.throughput) != len(self.queue_depths) or any(
            len(row) != len(self.chunk_sizes) for row in self.throughput
        ):
            raise ValueError(
                f"throughput must be {len(self.queue_depths)} rows (queue depths) of "
                f"{len(self.chunk_sizes)} values (chunk sizes)"
            )
        if any(v <= 0 for row in self.throughput for v in row):
            raise ValueError("throughput values must be > 0")
        return self


class FlashSpec(StrictModel):
    """A flash device (SSD / UFS). Reads land in ``target_memory``."""

    capacity: Bytes = Field(gt=0)
    latency: Seconds = Field(description="per read request batch, s")
    max_queue_depth: int = Field(ge=1, le=65536, description="outstanding reads the host keeps (threads / io_uring)")
    curve: FlashCurve
    target_memory: str = "dram"
    page_bytes: Bytes = Field(
        0.0, description="smallest unit a read moves: a shorter request costs a whole page (0: no minimum)"
    )
    aligned: bool = Field(
        False,
        description="requests move the whole pages they cover and requests meeting in a page are one (an O_DIRECT "
        "reader of page_bytes blocks); false: a request moves its bytes (page_bytes only as a minimum)",
    )

    @model_validator(mode="after")
    def _aligned_needs_pages(self) -> FlashSpec:
        if self.aligned and self.page_bytes <= 0:
            raise ValueError("aligned: true needs page_bytes > 0")
        return self


class MemorySpec(StrictModel):
    """DRAM or device memory (HBM / GDDR)."""

    capacity: Bytes = Field(gt=0)
    bandwidth: BandwidthBps
    copy_bandwidth: BandwidthBps = Field(description="memcpy within this memory (bytes moved per s)")


class LinkSpec(StrictModel):
    """A point-to-point link between two memories, one fair-shared channel per direction."""

    ends: tuple[str, str] = Field(strict=False)
    bandwidth_forward: BandwidthBps = Field(description="ends[0] -> ends[1], B/s")
    bandwidth_reverse: BandwidthBps = Field(description="ends[1] -> ends[0], B/s")
    latency: Seconds


class ProcessorSpec(StrictModel):
    """Roofline processor: time(op) = max(flops / peak_flops[dtype], bytes / mem_bandwidth) + overhead."""

    kind: Literal["cpu", "gpu", "npu"]
    memory: str = Field(description="the memory its operands live in")
    peak_flops: dict[Dtype, Flops]
    mem_bandwidth: BandwidthBps
    overhead: Seconds = Field(description="fixed cost per kernel, s")
    flops_efficiency: float = Field(1.0, gt=0, le=1, description="achieved / peak FLOP/s")
    bandwidth_efficiency: float = Field(1.0, gt=0, le=1, description="achieved / peak bytes/s")
    gather_efficiency: float = Field(1.0, gt=0, le=1, description="extra factor on kernels over gathered (sparse) rows")
    gather_row_overhead: Seconds = Field(0.0, ge=0, description="extra time per gathered row of such a kernel, s")


class HardwareProfile(StrictModel):
    name: str
    description: str = ""
    extends: str | None = Field(None, description="profile this one is merged over")
    caveats: list[str] = Field(
        [],
        description="what a reader must know before trusting this profile: numbers assumed or borrowed from another "
        "device, published numbers the interface cannot deliver (shown by `profiles`, written to about.md)",
    )
    flash: FlashSpec
    memories: dict[str, MemorySpec]
    links: dict[str, LinkSpec] = {}
    processors: dict[str, ProcessorSpec]

    @model_validator(mode="after")
    def _references(self) -> HardwareProfile:
        mems = set(self.memories)
        if self.flash.target_memory not in mems:
            raise ValueError(f"flash.target_memory {self.flash.target_memory!r} is not in memories {sorted(mems)}")
        for name, link in self.links.items():
            for end in link.ends:
                if end not in mems:
                    raise ValueError(f"links.{name}.ends: {end!r} is not in memories {sorted(mems)}")
        for name, proc in self.processors.items():
            if proc.memory not in mems:
                raise ValueError(f"processors.{name}.memory {proc.memory!r} is not in memories {sorted(mems)}")
        return self
