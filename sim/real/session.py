"""``python -m sim execute EXPERIMENT``: every case simulated, executed for real, replayed in the reference, compared.

Per case (an ordinary simulation experiment; its hardware should be this machine's calibrated profile):

1. the flash image of (model, layout, dtype) is taken from the image folder (``--images``, default
   ``$SIM_CACHE_DIR/../images`` i.e. ``~/.cache/sparse-llm-sim/images``) or written there from the model file once;
2. the case is simulated (:func:`sim.engine.simulate.simulate_case`);
3. it is executed for real (:func:`sim.real.executor.execute_case`);
4. its decode tokens are checked against the numpy reference (:func:`sim.real.compare.reference_outputs`).

The results folder holds ``comparison.csv`` (case x component: simulated and measured ms/token, % error, within
the 15% target, the device model to suspect), ``summary.csv`` (one row per case), ``real_steps.csv`` (every
measured step), ``simulated_steps.csv`` and ``about.md`` (machine, profile, images, trace, what was calibrated).
"""

from __future__ import annotations

import datetime as dt
import platform
from pathlib import Path

import pandas as pd

from sim.config.experiment import Case, load_experiment
from sim.errors import CapacityError
from sim.lab.modelfile.registry import cache_dir
from sim.outfolder import ResultsFolder
from sim.real.compare import TARGET_PCT, compare, reference_outputs, summary_row
from sim.real.executor import check_executable, execute_case

PLOT = Path(__file__).resolve().parents[2] / "experiments" / "plots" / "real_vs_sim.py"


def image_dir() -> Path:
    return cache_dir().parent / "images"


RANDOM_SEED = 0  # the weights of a shape no model file exists for (sim.lab.flash_image.random_weights)


def image_for(case: Case, folder: Path, log=print) -> Path:
    """The flash image of the case's (model, layout, dtype) in ``folder``, written once if absent: from the model
    file for a known model, else random weights of the profile's shapes (seed RANDOM_SEED)."""
    from sim.lab.modelfile.registry import KNOWN_MODELS

    cfg = case.config
    known = case.model.name in KNOWN_MODELS
    kind = "" if known else f"-random{RANDOM_SEED}"
    path = folder / f"{case.model.name}{kind}-{cfg.layout.name}-{cfg.dtype}.bin"
    if path.is_file() and Path(f"{path}.json").is_file():
        return path
    from sim.lab.flash_image import random_weights, write_image
    from sim.lab.modelfile.gguf_load import load_model
    from sim.layout import build_layout

    log(f"writing the flash image {path} (once{'' if known else ', random weights'})")
    mcfg, weights = load_model(case.model.name) if known else random_weights(case.model, RANDOM_SEED)
    layout = build_layout(cfg.layout.name, case.model, cfg.dtype)
    write_image(weights, case.model, layout, path, cfg.dtype, mcfg, None if known else RANDOM_SEED)
    return path


def execute_experiment(path: Path, out: Path, overrides: dict | None, images: Path | None, progress: bool,
                       warmup: int = 2, plots: bool = True, calibrate: bool = False
                       ) -> tuple[Path, pd.DataFrame]:  # fmt: skip
    """Run the whole comparison; returns (results folder, summary table). ``calibrate``: measure the machine first
    (quick mode) and simulate every case on that profile."""
    from tqdm import tqdm

    from sim.engine.simulate import simulate_case
    from sim.runner import run_plot

    for case in load_experiment(path, overrides):  # a bad file or --set fails before any measuring
        check_executable(case, hardware=not calibrate)
    folder = ResultsFolder(out)
    images = images or image_dir()
    images.mkdir(parents=True, exist_ok=True)
    measured = None
    if calibrate:
        measured = _calibrate_into(images, progress)
        overrides = {**(overrides or {}), "hardware": str(measured[0])}
    cases = load_experiment(path, overrides)
    for case in cases:
        check_executable(case)
    comparisons, summaries, real_steps, sim_steps, about = [], [], [], [], []
    total = sum(int(c.config.decode_tokens) for c in cases)
    with tqdm(total=total, unit="tok", desc="executing", disable=None if progress else True, leave=False) as bar:
        for case in cases:
            bar.set_postfix_str(case.name)
            image = image_for(case, images, log=bar.write)
            try:
                sim = simulate_case(case)
                real = execute_case(case, image, bar.update)
            except CapacityError as err:  # a budget a policy cannot live in is a result row, the others go on
                bar.write(f"note: case {case.name} does not fit: {err}")
                summaries.append({"case": case.name, "policy": case.config.policy.name, "status": "does_not_fit",
                                  "error": str(err)})  # fmt: skip
                continue
            matches = reference_outputs(real, case.model, image) == real.outputs
            rows = compare(sim, real, warmup)
            comparisons += rows
            summaries.append({**summary_row(sim, real, rows, matches), "status": "ok"})
            real_steps.append(real.steps.assign(case=case.name))
            sim_steps.append(sim.tokens.assign(case=case.name))
            about.append(f"- `{case.name}`: {case.hardware.name}, image `{image.name}`, "
                         f"activations {sim.summary.get('activations', 'none')}")  # fmt: skip
    if not comparisons:
        raise CapacityError(f"no case fits its memory; the first: {summaries[0]['error']}")
    summary = pd.DataFrame(summaries)
    with folder as tmp:
        if measured is not None:
            for file in measured:
                file.replace(tmp / file.name)
            measured[0].parent.rmdir()
        pd.DataFrame(comparisons).to_csv(tmp / "comparison.csv", index=False)
        summary.to_csv(tmp / "summary.csv", index=False)
        pd.concat(real_steps).to_csv(tmp / "real_steps.csv", index=False)
        pd.concat(sim_steps).to_csv(tmp / "simulated_steps.csv", index=False)
        (tmp / "about.md").write_text(_about(path, cases, about, warmup))
        if plots:
            run_plot(PLOT, tmp)
    return out, summary


def _calibrate_into(folder: Path, progress: bool) -> tuple[Path, Path]:
    """calibrate (quick) into a fresh folder inside ``folder`` (the images' disk): (the profile, its raw
    measurements), moved into the results at the end."""
    import tempfile

    from sim.commands.calibrate import calibrate_machine

    profile = Path(tempfile.mkdtemp(prefix=".calibrate-", dir=folder)) / "calibrated.yaml"
    report = calibrate_machine(profile, folder, "calibrated", thorough=False, progress=progress)
    return profile, report


def _about(path: Path, cases: list[Case], lines: list[str], warmup: int) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    hw = sorted({c.hardware.name for c in cases})
    return f"""# Simulated vs measured: {path.name}

Run on {when} on {platform.node()} ({platform.machine()}). Hardware profile(s): {", ".join(hw)} -- a profile
written by `python -m sim calibrate` on this machine is the only one a comparison is meaningful with; no number of
it was tuned to these runs (it comes from microbenchmarks: sim/real/calibrate.py).

Each case is simulated on the profile and executed for real by sim/real/executor.py with the same policy object:
reads with O_DIRECT from the flash image, memory management as row copies, the numpy kernels. Measured ms/token
are the mean over decode steps after the first {warmup}; the target is {TARGET_PCT:.0f}% per component.
`outputs_match_reference`: the real run's decode tokens equal the numpy reference computing the same neurons.

Cases:
{chr(10).join(lines)}
"""
