"""``python -m sim profiles [--hardware NAME | --model NAME]``: list the hardware and model profiles, or show one
resolved profile (``extends`` merged, units parsed to SI) as YAML."""

from __future__ import annotations

import argparse

import yaml

from sim.config.hardware import HardwareProfile
from sim.config.profiles import hardware_names, load_hardware, load_model, model_names
from sim.models.profile import ModelProfile
from sim.units import format_bytes


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("profiles", help="list hardware and model profiles, or show one resolved")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--hardware", metavar="NAME", help="show this hardware profile, extends resolved, as YAML")
    which.add_argument("--model", metavar="NAME", help="show this model profile and its derived sizes as YAML")
    parser.set_defaults(func=_profiles)


def _profiles(args: argparse.Namespace) -> int:
    if args.hardware:
        hw = load_hardware(args.hardware, "--hardware", "")
        print(hardware_yaml(hw), end="")
        for caveat in hw.caveats:
            print(f"# caveat: {caveat}")
    elif args.model:
        print(model_yaml(load_model(args.model, "--model", "")), end="")
    else:
        print(table(hardware_rows(), "hardware profiles (hardware_profiles/)"))
        caveats = [(name, c) for name in hardware_names() for c in load_hardware(name, "profiles", "").caveats]
        if caveats:
            print("caveats (*):")
            for name, caveat in caveats:
                print(f"  {name}: {caveat}")
        print()
        print(table(model_rows(), "model profiles (sim/models/profiles/)"))
    return 0


# ---- tables --------------------------------------------------------------------------------------
def _gbps(bandwidth_Bps: float) -> str:
    return f"{bandwidth_Bps / 1e9:.3g} GB/s"


def _capacity(n_bytes: float) -> str:
    """Memory sizes are binary (64 GiB of DRAM); flash and byte counts elsewhere stay decimal."""
    return f"{n_bytes / 2**30:.3g} GiB"


def _flops(flops: float) -> str:
    return f"{flops / 1e12:.3g} TFLOPS" if flops >= 1e12 else f"{flops / 1e9:.3g} GFLOPS"


def _processors(hw: HardwareProfile) -> str:
    parts = []
    for name, proc in hw.processors.items():
        dtype = "fp32" if "fp32" in proc.peak_flops else next(iter(proc.peak_flops))
        parts.append(f"{name} {_flops(proc.peak_flops[dtype])} {dtype}")
    return ", ".join(parts)


def hardware_rows() -> list[dict[str, str]]:
    """One row per hardware profile: what a reader compares between machines."""
    rows = []
    for name in hardware_names():
        hw = load_hardware(name, "profiles", "")
        dram = hw.memories[hw.flash.target_memory]
        rows.append(
            {
                "name": name + (" *" if hw.caveats else ""),
                "extends": hw.extends or "",
                "flash peak": _gbps(max(max(row) for row in hw.flash.curve.throughput)),
                "qd": str(hw.flash.max_queue_depth),
                "DRAM": _capacity(dram.capacity),
                "DRAM BW": _gbps(dram.bandwidth),
                "other memories": ", ".join(
                    f"{n} {_capacity(m.capacity)}" for n, m in hw.memories.items() if n != hw.flash.target_memory
                ),
                "processors (peak)": _processors(hw),
            }
        )
    return rows


def model_rows() -> list[dict[str, str]]:
    rows = []
    for name in model_names():
        m = load_model(name, "profiles", "")
        experts = f"{m.n_experts}x top-{m.experts_top_k}" if m.n_experts > 1 else ""
        rows.append(
            {
                "name": name,
                "params": f"{m.total_weights / 1e9:.3f} B",
                "fp16": format_bytes(m.total_bytes("fp16")),
                "layers": str(m.n_layers),
                "d_model": str(m.d_model),
                "d_ff": str(m.d_ff),
                "heads/kv": f"{m.n_heads}/{m.n_kv_heads}",
                "ffn": m.ffn_kind,
                "experts": experts,
                "features": features(m),
            }
        )
    return rows


def features(m: ModelProfile) -> str:
    """The profile's non-default architecture features, comma-separated."""
    parts = ["parallel attn"] if m.parallel_attention else []
    parts += [f"rotary {m.rotary_fraction:g}"] if m.rotary_fraction < 1 else []
    parts += ["q/k norm"] if m.qk_norm else []
    parts += ["biases"] if m.biases else []
    parts += [f"FATReLU {m.fatrelu_threshold:g}"] if m.ffn_kind == "fatrelu" else []
    parts += ["untied head"] if not m.tied_embeddings else []
    return ", ".join(parts)


def table(rows: list[dict[str, str]], title: str) -> str:
    """Left-aligned text table with a header line and a rule; columns as wide as their widest cell."""
    if not rows:
        return f"{title}: none"
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    line = lambda cells: "  ".join(cells[c].ljust(widths[c]) for c in cols).rstrip()  # noqa: E731
    rule = "  ".join("-" * widths[c] for c in cols)
    return "\n".join([title, line({c: c for c in cols}), rule, *(line(r) for r in rows)])


# ---- one profile as YAML -------------------------------------------------------------------------
def _rounded(value: object) -> object:
    """Drop float noise from unit parsing (100 us -> 1e-04, not 9.999999999999999e-05)."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


class _Dumper(yaml.SafeDumper):
    """Block style, except lists of scalars on one line (curve rows stay readable)."""

    def represent_list(self, data: list) -> yaml.Node:
        flow = all(not isinstance(v, dict | list) for v in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _Dumper.represent_list)


def _dump(data: dict) -> str:
    return yaml.dump(_rounded(data), Dumper=_Dumper, sort_keys=False, width=120)


def hardware_yaml(hw: HardwareProfile) -> str:
    header = f"# hardware profile {hw.name}, extends resolved; SI units: bytes, B/s, s, FLOP/s\n"
    return header + _dump(hw.model_dump(mode="json"))


def model_yaml(m: ModelProfile) -> str:
    derived = {
        "total_weights": m.total_weights,
        "bytes_total": {d: m.total_bytes(d) for d in ("fp32", "fp16", "int8", "q4_0")},
        "bytes_per_layer_fp16": m.layer_bytes("fp16"),
        "bytes_per_neuron_fp16": m.neuron_bytes("fp16"),
        "kv_bytes_per_token_fp16": m.kv_bytes_per_token("fp16"),
        "flops_per_token": m.flops_per_token(),
    }
    body, extra = _dump(m.model_dump(mode="json")), _dump({"derived": derived})
    return f"# model profile {m.name}\n{body}# derived from the shapes (not part of the profile file)\n{extra}"
