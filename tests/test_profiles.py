"""Hardware and model profiles: every file loads, every hardware number names its source, ``extends`` overrides
only what a variant states, model shapes give the published parameter counts, and bad input is one clear line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from sim.cli import main
from sim.config.base import load_yaml
from sim.config.profiles import HARDWARE_DIR, MODEL_DIR, hardware_names, load_hardware, load_model, model_names
from sim.errors import ConfigError

LABEL_KEYS = ("name", "description", "extends", "caveats")
# a digit that starts a number, not one inside a name such as fp32, q4_0, rtx4090 or apple-m1-max
NUMBER = re.compile(r"(?<![A-Za-z0-9_\-.])\d")


def uncommented_numbers(text: str) -> list[str]:
    """Lines of a profile that hold a number but no ``# source`` comment (label keys are not quantities)."""
    bad, in_caveats = [], False
    for line in text.splitlines():
        code, _, comment = line.partition("#")
        in_caveats = line.startswith("caveats:") or (in_caveats and line.startswith("  - "))
        if in_caveats or code.strip().split(":", 1)[0] in LABEL_KEYS:  # caveats are prose about the numbers
            continue
        if NUMBER.search(code) and not comment.strip():
            bad.append(line)
    return bad


def leaves(data: object, prefix: str = "") -> dict[str, object]:
    """Flatten nested mappings to ``{"a.b.c": value}``; lists are leaves (a merge replaces them whole)."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, object] = {}
    for key, value in data.items():
        out.update(leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def changed_paths(child: str, parent: str) -> set[str]:
    a, b = leaves(load_hardware(child).model_dump()), leaves(load_hardware(parent).model_dump())
    return {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)} - set(LABEL_KEYS)


def unstated_changes(child: str, parent: str, stated: set[str]) -> set[str]:
    """Changed leaves the child's file does not state. A leaf new to the parent (a default of a section the child
    adds, e.g. a GPU's efficiency fields) counts as stated when the child states a sibling."""
    existing = leaves(load_hardware(parent).model_dump())
    unstated = set()
    for key in changed_paths(child, parent) - stated:
        section = key.rsplit(".", 1)[0] + "."
        if key in existing or not any(s.startswith(section) for s in stated):
            unstated.add(key)
    return unstated


def stated_paths(path: Path) -> set[str]:
    return set(leaves(load_yaml(path))) - set(LABEL_KEYS)


# ---- every profile loads ---------------------------------------------------------------------------
HARDWARE = [
    "apple-m1-max",
    "apple-m2-ultra",
    "pc-high-rtx4090",
    "pc-low-rtx2080ti",
    "oneplus-12",
    "pixel-6",
    "infinix-zero-30",
    "a100-xeon-8480",
    "l20-xeon-8563c",
    "nvme-desktop",
    "lif-rtx4090",
]
MODELS = [
    "opt-6.7b",
    "falcon-7b",
    "persimmon-8b",
    "phi-2",
    "llama-2-7b",
    "llama-2-70b",
    "llama-3-8b",
    "llama-3.1-8b",
    "mistral-7b",
    "mixtral-8x7b",
    "codellama-13b",
    "codellama-34b",
    "smollm2-135m",
]


def test_required_profiles_exist():
    assert set(HARDWARE) <= set(hardware_names())
    assert set(MODELS) <= set(model_names())


@pytest.mark.parametrize("name", hardware_names())
def test_hardware_profile_loads_and_is_consistent(name):
    hw = load_hardware(name)
    assert hw.name == name
    curve = hw.flash.curve
    assert curve.chunk_sizes[0] <= 4 * 2**10 and curve.chunk_sizes[-1] >= 64 * 2**20, "span 4 KiB .. 64 MiB"
    assert curve.queue_depths[0] == 1 and curve.queue_depths[-1] == hw.flash.max_queue_depth
    for row in curve.throughput:  # throughput never falls as chunks grow
        assert row == sorted(row)
    for lower, upper in zip(curve.throughput, curve.throughput[1:], strict=False):  # nor as queue depth grows
        assert all(a <= b for a, b in zip(lower, upper, strict=True))


@pytest.mark.parametrize("name", model_names())
def test_model_profile_loads(name):
    model = load_model(name)
    assert model.name == name
    assert model.n_heads * model.head_dim == model.d_model  # true of every model listed (no wide-q models)


# ---- every hardware number carries a source comment -------------------------------------------------
@pytest.mark.parametrize("path", sorted(HARDWARE_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_number_in_a_hardware_profile_has_a_source_comment(path):
    assert uncommented_numbers(path.read_text()) == []


def test_the_source_comment_check_catches_a_bare_number():
    text = 'name: rtx4090-x\nflash:\n  latency: "15 us"\n  max_queue_depth: 32  # datasheet\n  fp32: "1 TFLOPS"  #\n'
    assert uncommented_numbers(text) == ['  latency: "15 us"', '  fp32: "1 TFLOPS"  #']


# ---- extends overrides only what it states ----------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in hardware_names() if load_yaml(HARDWARE_DIR / f"{n}.yaml").get("extends")])
def test_a_variant_changes_only_what_its_file_states(name):
    path = HARDWARE_DIR / f"{name}.yaml"
    parent = load_yaml(path)["extends"]
    assert changed_paths(name, parent), f"{name} changes nothing relative to {parent}"
    assert unstated_changes(name, parent, stated_paths(path)) == set()


def test_lif_rtx4090_is_pc_high_with_the_m1_max_flash():
    assert {p.split(".")[0] for p in changed_paths("lif-rtx4090", "pc-high-rtx4090")} == {"flash"}
    assert load_hardware("lif-rtx4090").flash == load_hardware("apple-m1-max").flash


def test_rtx4090_sim_l20_changes_only_vram_size_and_host_bandwidth():
    assert changed_paths("rtx4090-sim-l20", "l20-xeon-8563c") == {
        "memories.dram.bandwidth",
        "memories.dram.copy_bandwidth",
        "memories.vram.capacity",
        "processors.cpu.mem_bandwidth",
    }


def test_extends_merges_nested_mappings_and_keeps_siblings(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text(
        "name: child\nextends: pc-high-rtx4090\nprocessors:\n  gpu:\n    peak_flops:\n      fp32: 1 TFLOPS\n"
    )
    merged, parent = load_hardware(str(child)), load_hardware("pc-high-rtx4090")
    assert merged.processors["gpu"].peak_flops["fp32"] == 1e12
    assert merged.processors["gpu"].peak_flops["bf16"] == parent.processors["gpu"].peak_flops["bf16"]
    assert merged.flash == parent.flash


# ---- M1 Max flash: LLM in a Flash Table 2 operating points --------------------------------------------
@pytest.mark.parametrize(("chunk", "gbps"), [(8 * 2**10, 1.25), (16 * 2**10, 2.25), (2**20, 6.10), (64 * 2**20, 6.10)])
def test_m1_max_curve_passes_through_table_2_at_32_threads(chunk, gbps):
    curve = load_hardware("apple-m1-max").flash.curve
    row = curve.throughput[curve.queue_depths.index(32)]
    assert row[curve.chunk_sizes.index(chunk)] == pytest.approx(gbps * 1e9)


def test_m1_max_naive_read_of_opt_is_table_2s_2196_ms():
    peak = max(load_hardware("apple-m1-max").flash.curve.throughput[-1])
    assert 13.4e9 / peak == pytest.approx(2.196, abs=1e-3)


# ---- closed-form byte arithmetic ------------------------------------------------------------------
def test_opt_6_7b_fp16_is_the_papers_13_4_gb():
    assert load_model("opt-6.7b").total_bytes("fp16") == pytest.approx(13.4e9, rel=0.01)


@pytest.mark.parametrize(
    ("name", "published"),
    [
        ("llama-2-7b", 6.74e9),  # Meta: 6,738,415,616 incl. 266,240 RMSNorm weights we omit
        ("llama-2-70b", 68.98e9),  # Meta: 68,976,648,192 incl. RMSNorm weights
        ("mixtral-8x7b", 46.7e9),  # Mistral: 46.7B total
        ("llama-3-8b", 8.03e9),  # Meta: 8,030,261,248 incl. RMSNorm weights
        ("smollm2-135m", 134.5e6),  # 134.5M with tied embeddings (incl. 35,136 RMSNorm weights we omit)
        ("phi-2", 2.78e9),  # Microsoft: 2.7B (2.78B with embeddings and untied head)
        ("persimmon-8b", 9.3e9),  # Adept: 9.3B incl. embeddings
    ],
)
def test_parameter_counts_match_published_totals(name, published):
    assert load_model(name).total_weights == pytest.approx(published, rel=0.012)


def test_mixtral_activates_two_of_eight_experts():
    m = load_model("mixtral-8x7b")
    attention_and_head = 2 * (m.n_layers * m.attention_weights_per_layer + m.vocab_size * m.d_model)
    ffn_active = 2 * m.n_layers * m.ffn_weights_per_layer * 2 / 8
    assert m.flops_per_token() == pytest.approx(attention_and_head + ffn_active)


def test_q4_0_is_4_5_bits_per_weight():
    m = load_model("llama-2-7b")
    assert m.total_bytes("q4_0") * 8 / m.total_weights == pytest.approx(4.5)


def test_llama_3_1_8b_kv_bytes_per_token():
    assert load_model("llama-3.1-8b").kv_bytes_per_token("fp16") == 2 * 32 * 8 * 128 * 2 == 131072


def test_opt_neuron_row_and_bundle_are_table_2s_chunks():
    m = load_model("opt-6.7b")
    assert m.row_bytes("fp16") == 8 * 2**10
    assert m.neuron_bytes("fp16") == 16 * 2**10
    assert m.neuron_bytes("fp32") == 32 * 2**10  # App. C: bundle = 2 * d_model * bytes, 32 KiB at fp32


# ---- bad input is one line naming file, key and value ---------------------------------------------
def _edited_copy(tmp_path: Path, old: str, new: str) -> Path:
    text = (HARDWARE_DIR / "apple-m1-max.yaml").read_text()
    assert old in text
    path = tmp_path / "edited.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


def test_bad_unit_names_file_key_and_value(tmp_path):
    path = _edited_copy(tmp_path, 'bandwidth: "400 GB/s"', 'bandwidth: "400 GB"')
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}: memories\.dram\.bandwidth: .*'400 GB'"):
        load_hardware(str(path))


def test_bare_number_without_unit_is_rejected(tmp_path):
    path = _edited_copy(tmp_path, 'latency: "100 us"', "latency: 100")
    with pytest.raises(ConfigError, match=r"flash\.latency: .*no unit.*\(got 100\)"):
        load_hardware(str(path))


def test_unknown_key_is_named(tmp_path):
    path = _edited_copy(tmp_path, "  max_queue_depth: 32", "  max_queue_depth: 32\n  turbo: on")
    with pytest.raises(ConfigError, match=r"edited\.yaml: flash\.turbo: unknown key"):
        load_hardware(str(path))


def test_unknown_model_key_is_named(tmp_path):
    path = tmp_path / "m.yaml"
    data = load_yaml(MODEL_DIR / "opt-6.7b.yaml")
    path.write_text(yaml.safe_dump({**data, "n_layer": 32}))
    with pytest.raises(ConfigError, match=r"m\.yaml: n_layer: unknown key"):
        load_model(str(path))


# ---- the CLI ---------------------------------------------------------------------------------------
def test_profiles_lists_every_profile_in_aligned_columns(capsys):
    assert main(["profiles"]) == 0
    out = capsys.readouterr().out
    for name in hardware_names() + model_names():
        assert re.search(rf"^{re.escape(name)}\s", out, re.M), name
    lines = out.splitlines()
    header = lines[1]
    column = header.index("flash peak")
    rows = lines[3 : 3 + len(hardware_names())]
    assert all(row[column - 2 : column] == "  " and row[column] != " " for row in rows)


def test_profiles_shows_one_resolved_hardware_profile(capsys):
    assert main(["profiles", "--hardware", "apple-m2-ultra"]) == 0
    shown = leaves(yaml.safe_load(capsys.readouterr().out))
    resolved = leaves(load_hardware("apple-m2-ultra").model_dump(mode="json"))
    assert shown.keys() == resolved.keys()
    for key, value in resolved.items():
        assert shown[key] == (pytest.approx(value, rel=1e-9) if isinstance(value, float) else value), key
    assert shown["flash.latency"] == pytest.approx(load_hardware("apple-m1-max").flash.latency)  # inherited


def test_profiles_prints_each_caveat_under_the_profile(capsys):
    assert main(["profiles", "--hardware", "pixel-6"]) == 0
    out = capsys.readouterr().out
    assert "# caveat: flash peak 4.2 GB/s (ActiveFlow) exceeds what UFS 3.1 can carry" in out
    assert main(["profiles"]) == 0
    table = capsys.readouterr().out
    assert "pixel-6 *" in table and "  pixel-6: flash peak 4.2 GB/s" in table and "this-machine *" not in table


def test_m2_ultra_flash_peaks_at_the_papers_6_gib_per_s_sequential_read():
    curve = load_hardware("apple-m2-ultra").flash.curve
    assert max(max(row) for row in curve.throughput) == pytest.approx(6 * 2**30, rel=2e-3)


def test_profiles_shows_one_model_profile(capsys):
    assert main(["profiles", "--model", "llama-3.1-8b"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["n_kv_heads"] == 8
    assert shown["derived"]["kv_bytes_per_token_fp16"] == 131072


@pytest.mark.parametrize("flag", ["--hardware", "--model"])
def test_unknown_profile_is_one_line_listing_known_names(flag, capsys):
    assert main(["profiles", flag, "no-such-thing"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "'no-such-thing'" in err and ("apple-m1-max" in err or "opt-6.7b" in err)
