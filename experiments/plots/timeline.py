"""Gantt chart of device activity (from timeline.json): per case, the last decode step recorded
(``timeline_tokens`` sets how many are; later steps are warmer), with the step's own span on top."""

import json

from _common import plt, results_dir, save

folder = results_dir()
trace = json.loads((folder / "timeline.json").read_text())["traceEvents"]
cases = {e["pid"]: e["args"]["name"] for e in trace if e["ph"] == "M" and e["name"] == "process_name"}
threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in trace if e["ph"] == "M" and e["name"] == "thread_name"}
spans = [e for e in trace if e["ph"] == "X"]
KIND_COLORS = {"step": "#7f7f7f", "flash": "#d62728", "processor": "#1f77b4", "copy": "#ff7f0e", "link": "#9467bd"}
PROCESSORS = {"cpu", "gpu", "npu"}


def kind(track: str) -> str:
    """The kind of device a track shows; lanes are ordered by kind, so every panel reads the same way."""
    if track in ("step", "flash"):
        return track
    if track in PROCESSORS:
        return "processor"
    return "copy" if track.endswith(":copy") else "link"


ORDER = list(KIND_COLORS)
fig, axes = plt.subplots(len(cases), 1, figsize=(10, 0.6 + 1.5 * len(cases)), squeeze=False)
for ax, (pid, case) in zip(axes[:, 0], sorted(cases.items()), strict=True):
    tracks = sorted(
        (tid for (p, tid) in threads if p == pid),
        key=lambda t: (ORDER.index(kind(threads[(pid, t)])), threads[(pid, t)]),
    )
    steps = [e for e in spans if e["pid"] == pid and threads[(pid, e["tid"])] == "step"]
    decodes = [e for e in steps if e["name"].startswith("decode")] or steps
    shown = decodes[-1] if decodes else None
    for row, tid in enumerate(reversed(tracks)):
        mine = [e for e in spans if e["pid"] == pid and e["tid"] == tid]
        bars = [(e["ts"] / 1e3, max(e["dur"] / 1e3, 1e-6)) for e in mine]
        ax.broken_barh(
            bars, (row - 0.4, 0.8), color=KIND_COLORS[kind(threads[(pid, tid)])], edgecolor="white", linewidth=0.3
        )
    ax.set_yticks(range(len(tracks)), [threads[(pid, t)] for t in reversed(tracks)], fontsize=8)
    if shown is not None:
        start_ms, dur_ms = shown["ts"] / 1e3, shown["dur"] / 1e3
        ax.set_xlim(start_ms - 0.01 * dur_ms, start_ms + 1.01 * dur_ms)
        title = f"{case}: {shown['name']} ({dur_ms:.3g} ms)"
    else:
        title = case
    ax.set_title(title, fontsize=9, loc="left")
    ax.set_xlabel("simulated time (ms)")
kinds_seen = {kind(name) for name in threads.values()}
handles = [plt.Rectangle((0, 0), 1, 1, color=KIND_COLORS[k]) for k in ORDER if k in kinds_seen]
fig.legend(handles, [k for k in ORDER if k in kinds_seen], loc="upper right", ncols=len(handles), fontsize=8)
fig.suptitle("Device activity in the last recorded decode step", fontsize=10, x=0.02, ha="left")
save(fig, folder / "timeline.png")
