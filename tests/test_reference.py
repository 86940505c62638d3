"""The numpy forward vs an independent reference: transformers (torch CPU, float32) loading the same GGUF.

Both dequantize the same Q4_1/Q8_0 blocks to float32, so the only expected difference is float32 rounding in a
different summation order (BLAS vs torch kernels). Measured on SmolLM2-135M-Instruct (48 positions): max
|Δlogit| ≈ 1e-4 on logits of magnitude up to ~35, i.e. ~3e-6 relative. MAX_ABS_DLOGIT allows 20x that;
real mistakes are orders of magnitude larger (RoPE on the wrong dim pairs, a dropped bias, a wrong norm eps
or GQA head mapping all move logits by O(0.1..10)).
"""

from __future__ import annotations

import numpy as np
import pytest

from sim.lab.kernels import RunState, generate_greedy, prefill
from sim.lab.modelfile import load_model, load_tokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.reference
MAX_ABS_DLOGIT = 2e-3
TEXT = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light."
)


def _hf_load(folder, filename):
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    return model.eval()


def _hf_logits(model, ids) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()  # [n, vocab]


@pytest.fixture(scope="module")
def hf(model_path):
    model = _hf_load(model_path.parent, model_path.name)
    tok = transformers.AutoTokenizer.from_pretrained(model_path.parent, gguf_file=model_path.name)
    return model, tok


@pytest.mark.model
def test_logits_match_transformers(smollm, hf):
    cfg, w, tok = smollm
    ids = tok.encode(TEXT)[:48]
    assert len(ids) == 48
    ours = prefill(cfg, w, RunState.new(cfg, 64), ids)
    ref = _hf_logits(hf[0], ids)
    delta = float(np.max(np.abs(ours - ref)))
    top1 = float(np.mean(ours.argmax(1) == ref.argmax(1)))
    print(f"\nreference: {len(ids)} positions, max |dlogit| {delta:.3g} (logit range ±{np.abs(ref).max():.1f}), "
          f"top-1 agreement {top1:.0%}")  # fmt: skip
    assert top1 == 1.0
    assert delta < MAX_ABS_DLOGIT


@pytest.mark.model
def test_greedy_decode_matches_transformers_and_knows_paris(smollm, hf):
    cfg, w, tok = smollm
    prompt = tok.encode("The capital of France is")
    ours = generate_greedy(cfg, w, prompt, 12)
    assert tok.decode(ours).startswith(" Paris")
    with torch.no_grad():
        ref = hf[0].generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, min_new_tokens=12)
    assert ours == ref[0, len(prompt) :].tolist()


@pytest.mark.model
def test_tokenizer_matches_transformers(smollm, hf):
    tok, ref = smollm[2], hf[1]
    for text in [
        TEXT,
        "def f(x):\n    return x**2\n",
        "<|im_start|>user\nHi!<|im_end|>",
        "naïve café — 東京 ü",
        "  a\t\tb",
    ]:
        assert tok.encode(text) == ref(text, add_special_tokens=False)["input_ids"], text


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_tiny_llama_and_qwen2_gguf_match_transformers(tmp_path, arch):
    """Synthetic files (no download): llama exercises the q/k un-permutation, qwen2 the q/k/v biases."""
    from test_modelfile import write_tiny_gguf

    write_tiny_gguf(tmp_path / "m.gguf", arch, np.random.default_rng(3))
    cfg, w = load_model(tmp_path / "m.gguf")
    ids = load_tokenizer(tmp_path / "m.gguf").encode("ab cd ef ab gh ij")
    ours = prefill(cfg, w, RunState.new(cfg, 32), ids)
    ref = _hf_logits(_hf_load(tmp_path, "m.gguf"), ids)
    np.testing.assert_allclose(ours, ref, atol=1e-4)
