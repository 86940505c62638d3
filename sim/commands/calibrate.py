"""``python -m sim calibrate --out PROFILE.yaml [--thorough] [--dir DIR] [--name NAME]``: measure this machine.

Writes a hardware profile whose every number is a measurement made here (``sim/real/calibrate.py`` says how) and
the raw measurements beside it (``PROFILE.calibration.csv``). Refuses to overwrite a file it did not write, and a
folder where ``O_DIRECT`` is unavailable (tmpfs) with one line.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sim.errors import SimError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("calibrate", help="measure this machine's flash, DRAM and numpy kernels -> a profile")
    p.add_argument("--out", type=Path, required=True, help="hardware profile to write (e.g. hardware_profiles/x.yaml)")
    p.add_argument("--thorough", action="store_true", help="more sizes, depths and repeats (minutes, not seconds)")
    p.add_argument("--dir", type=Path, help="disk folder for the scratch file read back (default: --out's folder)")
    p.add_argument("--name", help="profile name (default: --out's file name without .yaml)")
    p.set_defaults(func=_calibrate)


def _check_out(out: Path) -> None:
    from sim.real.calibrate import MARKER

    if out.suffix != ".yaml":
        raise SimError(f"--out {out}: a hardware profile is a .yaml file")
    if out.is_dir():
        raise SimError(f"--out {out}: is a folder; give the profile's file name")
    if out.exists() and not out.read_text(errors="replace").startswith(MARKER):
        raise SimError(f"--out {out}: exists and was not written by calibrate; refusing to overwrite it")
    if not out.parent.is_dir():
        raise SimError(f"--out {out}: folder {out.parent} does not exist")


def _calibrate(args: argparse.Namespace) -> int:
    out: Path = args.out
    _check_out(out)
    folder = args.dir or out.parent
    if not folder.is_dir():
        raise SimError(f"--dir {folder}: no such folder")
    calibrate_machine(out, folder, args.name or out.stem, args.thorough, progress=True, verbose=True)
    return 0


def calibrate_machine(out: Path, folder: Path, name: str, thorough: bool, progress: bool = True,
                      verbose: bool = False) -> Path:  # fmt: skip
    """Measure, write the profile ``out`` and its raw measurements beside it; returns the measurements' path."""
    from tqdm import tqdm

    from sim.config.profiles import load_hardware
    from sim.real import calibrate as cal
    from sim.real.odirect import check_disk, open_direct

    plan = cal.Plan.of(thorough)
    steps = plan.rounds * len(plan.chunk_sizes) * len(plan.queue_depths) + plan.kernel_points() + 4
    bar = tqdm(total=steps, desc="calibrate", unit="step", leave=False, disable=None if progress else True)

    def progress(what: str) -> None:
        bar.set_postfix_str(what)
        bar.update(1)

    check_disk(folder)  # before writing anything there
    scratch = None
    try:
        progress("writing the scratch file")
        scratch = cal.scratch_file(folder, plan.file_bytes)
        os.close(open_direct(scratch))  # refuses here, with its reason, where O_DIRECT is unavailable
        flash = cal.measure_flash(scratch, plan, progress)
        progress("flash latency")
        latency_s = cal.measure_latency(scratch)
    finally:
        if scratch is not None:
            scratch.unlink(missing_ok=True)
    progress("DRAM copies")
    copy = cal.measure_copy(plan)
    kernels = cal.measure_kernels(plan, progress)
    progress("GEMM")
    gemm = cal.measure_gemm()
    bar.close()
    threads = int(kernels.threads.max())
    fit = cal.fit_kernels(kernels, threads)
    report = out.with_suffix(".calibration.csv")
    text = cal.profile_yaml(name, flash, latency_s, copy, fit, gemm, threads, folder, report.name, thorough)
    tmp = out.with_name(f".{out.stem}.tmp.yaml")
    tmp.write_text(text)
    try:
        load_hardware(str(tmp))  # the profile must load before it replaces anything
    except SimError:
        tmp.unlink()
        raise
    _write_report(report, flash, kernels, copy, latency_s, gemm)
    os.replace(tmp, out)
    if not verbose:
        return report
    print(f"wrote {out} (flash {len(flash)} points, kernels {len(kernels)} points; raw numbers in {report})")
    print(f"  flash qd {int(flash.queue_depth.max())} x {int(flash.chunk_bytes.max()) // 1024} KiB: "
          f"{flash.throughput_Bps.max() / 1e9:.2f} GB/s; 4 KiB read {latency_s * 1e6:.0f} us; "
          f"block kernels {fit.mem_bandwidth / 1e9:.1f} GB/s + {fit.overhead_s * 1e6:.0f} us/kernel "
          f"(fit within {fit.residual_pct:.0f}%)")  # fmt: skip
    return report


def _write_report(path: Path, flash, kernels, copy: dict, latency_s: float, gemm: float) -> None:
    import pandas as pd

    from sim.real.calibrate import MARKER

    if path.exists() and not path.read_text(errors="replace").startswith(MARKER):
        raise SimError(f"{path}: exists and was not written by calibrate; refusing to overwrite it")
    scalars = pd.DataFrame([{"what": k, "value": v} for k, v in {**copy, "latency_4KiB_qd1_s": latency_s,
                                                                  "gemm_fp32_flops": gemm}.items()])  # fmt: skip
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(f"{MARKER}: raw measurements (three tables: flash, kernels, scalars)\n")
        for table in (flash.assign(table="flash"), kernels.assign(table="kernels"), scalars.assign(table="scalars")):
            table.to_csv(f, index=False)
    os.replace(tmp, path)
