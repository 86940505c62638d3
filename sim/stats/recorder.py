"""Device activity spans, collected during a run and written as a Chrome/Perfetto trace.

Devices call ``recorder.span(track, name, start_s, end_s, nbytes)`` once per batch of reads, transfer
or kernel; a :class:`NullRecorder` makes that free when no timeline is wanted.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Recorder:
    """Append-only lists (cheap on the hot path); turned into a table or trace after the run."""

    track: list[str] = field(default_factory=list)
    name: list[str] = field(default_factory=list)
    start_s: list[float] = field(default_factory=list)
    end_s: list[float] = field(default_factory=list)
    nbytes: list[float] = field(default_factory=list)
    enabled: bool = True

    def span(self, track: str, name: str, start_s: float, end_s: float, nbytes: float = 0.0) -> None:
        if not self.enabled:
            return
        self.track.append(track)
        self.name.append(name)
        self.start_s.append(start_s)
        self.end_s.append(end_s)
        self.nbytes.append(nbytes)

    def __len__(self) -> int:
        return len(self.track)


class NullRecorder(Recorder):
    def __init__(self) -> None:
        super().__init__(enabled=False)
