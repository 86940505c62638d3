"""Gantt chart of device activity (from timeline.json) for the first recorded tokens of each case."""

import json

from _common import plt, results_dir, save

folder = results_dir()
trace = json.loads((folder / "timeline.json").read_text())["traceEvents"]
cases = {e["pid"]: e["args"]["name"] for e in trace if e["ph"] == "M" and e["name"] == "process_name"}
threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in trace if e["ph"] == "M" and e["name"] == "thread_name"}
spans = [e for e in trace if e["ph"] == "X"]
# Show the first token of each case (the JSON holds a few): its end bounds the x axis.
first_end = {e["pid"]: e["ts"] + e["dur"] for e in spans if e["name"] == "token 0"}
fig, axes = plt.subplots(len(cases), 1, figsize=(10, 1.2 + 0.9 * max(1, len(threads))), squeeze=False)
TRACK_COLORS = {"token": "#c7c7c7", "flash": "#d62728", "cpu": "#1f77b4", "gpu": "#1f77b4", "npu": "#1f77b4"}


def color(track: str) -> str:
    """Same colour for the same kind of device in every panel (copies orange, links purple)."""
    if track in TRACK_COLORS:
        return TRACK_COLORS[track]
    return "#ff7f0e" if track.endswith(":copy") else "#9467bd"


for ax, (pid, case) in zip(axes[:, 0], sorted(cases.items()), strict=True):
    tracks = sorted({tid for (p, tid) in threads if p == pid})
    for row, tid in enumerate(tracks):
        mine = [e for e in spans if e["pid"] == pid and e["tid"] == tid]
        bars = [(e["ts"] / 1e3, max(e["dur"] / 1e3, 1e-6)) for e in mine]
        ax.broken_barh(bars, (row - 0.4, 0.8), color=color(threads[(pid, tid)]), edgecolor="white", linewidth=0.3)
    ax.set_yticks(range(len(tracks)), [threads[(pid, t)] for t in tracks], fontsize=8)
    if pid in first_end:
        ax.set_xlim(0, first_end[pid] / 1e3)
    ax.set_title(f"{case} (first token)", fontsize=9, loc="left")
    ax.set_xlabel("simulated time (ms)")
save(fig, folder / "timeline.png")
