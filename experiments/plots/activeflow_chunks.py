"""The chunk sizes ActiveFlow's layouts produce, against the flash curve they are read at.

For the first case of an activeflow run (its model, dtype and hardware): one read of one input channel of each op
is ``column_bytes`` in the layer -> channel layout and ``group x column_bytes`` in op -> channel -> layer
(:class:`sim.activeflow.channels.ChannelLayout`); each is placed on the device's throughput curve at queue depth 1
and at the profile's deepest queue. Also writes ``activeflow_chunks.csv`` (op, group, chunk_bytes, GB/s at qd 1 and
at the deepest queue).

Usage: python experiments/plots/activeflow_chunks.py RESULTS_DIR  ->  activeflow_chunks.png, activeflow_chunks.csv
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import simpy
import yaml
from _common import finish, plt, results_dir

from sim.activeflow.channels import ChannelLayout
from sim.config.profiles import load_hardware, load_model
from sim.devices.flash import Flash

GROUPS = (1, 2, 4, 8)


def main() -> None:
    folder = results_dir()
    resolved = yaml.safe_load((folder / "config.resolved.yaml").read_text())
    case = next(iter(resolved["cases"].values()))
    hardware = load_hardware(case["hardware"], overrides=case.get("hardware_overrides") or None)
    model, dtype = load_model(case["model"]), case["dtype"]
    flash = Flash(simpy.Environment(), hardware.flash)
    depths = (1, hardware.flash.max_queue_depth)
    rows = []
    for group in GROUPS:
        layout = ChannelLayout(model, dtype, group)
        for op, column in layout.column_bytes.items():
            chunk = column * group
            rows.append({"op": op, "group": group, "chunk_bytes": chunk,
                         **{f"GBps_qd{q}": flash.throughput_Bps(chunk, q) / 1e9 for q in depths}})  # fmt: skip
    table = pd.DataFrame(rows)
    table.to_csv(folder / "activeflow_chunks.csv", index=False)
    fig, ax = plt.subplots(figsize=(8, 4))
    grid = np.logspace(np.log10(table.chunk_bytes.min() / 2), np.log10(64 * 2**20), 200)
    for q in depths:
        ax.plot(grid, flash.throughput_Bps(grid, q) / 1e9, label=f"{hardware.name} flash, queue depth {q}")
    markers = dict(zip(GROUPS, "o^sD", strict=True))
    for group, part in table.groupby("group"):
        ax.scatter(part.chunk_bytes, part[f"GBps_qd{depths[-1]}"], marker=markers[group], zorder=3,
                   label=f"one channel read, group {group}")  # fmt: skip
        for chunk, same in part.groupby("chunk_bytes"):  # ops of one chunk size share a label
            ax.annotate(",".join(same.op), (chunk, same[f"GBps_qd{depths[-1]}"].iloc[0]), fontsize=6, xytext=(4, -9),
                        textcoords="offset points")  # fmt: skip
    ax.set(xscale="log", xlabel="bytes per read (chunk)", ylabel="GB/s",
           title=f"{model.name} {dtype}: channel reads per layout group vs the flash curve")  # fmt: skip
    finish(fig, [ax], folder / "activeflow_chunks.png", legend_size=7)


if __name__ == "__main__":
    main()
