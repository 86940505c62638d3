"""Byte-level BPE tokenizer built from a GGUF's ``tokenizer.ggml.*`` metadata with the HF ``tokenizers`` package.

Only ``tokenizer.ggml.model == "gpt2"`` (byte-level BPE: SmolLM2, Qwen2, Llama 3) is supported. The text is split
before BPE as llama.cpp does for the file's ``tokenizer.ggml.pre`` (see ``PRE_SPLITS``); "smollm" splits every
digit on its own, as SmolLM2's original tokenizer.json does. Tokens of type CONTROL (3) are special tokens
matched whole.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from gguf import GGUFReader
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

from sim.errors import ModelFileError
from sim.lab.modelfile.gguf_load import meta, open_gguf

_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# tokenizer.ggml.pre -> regexes applied in order (llama.cpp src/llama-vocab.cpp); anything else: GPT-2's regex
PRE_SPLITS: dict[str, tuple[str, ...]] = {
    "smollm": (r"\p{N}", _GPT2_SPLIT),
    "qwen2": (_QWEN2_SPLIT,),
    "llama-bpe": (_LLAMA3_SPLIT,),
    "llama3": (_LLAMA3_SPLIT,),
}
CONTROL = 3  # llama.cpp token type


@dataclass(frozen=True)
class GGUFTokenizer:
    tokenizer: Tokenizer
    bos_id: int | None
    eos_id: int | None
    add_bos: bool

    def encode(self, text: str) -> list[int]:
        """Text -> token ids (BOS prepended when the file says tokenizer.ggml.add_bos_token)."""
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        return [self.bos_id, *ids] if self.add_bos and self.bos_id is not None else ids

    def decode(self, ids: list[int], skip_special: bool = False) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)


def _pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
    splits = [pre_tokenizers.Split(Regex(rx), behavior="isolated") for rx in PRE_SPLITS.get(pre, (_GPT2_SPLIT,))]
    return pre_tokenizers.Sequence([*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def tokenizer_from_reader(reader: GGUFReader) -> GGUFTokenizer:
    kind = meta(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise ModelFileError(f"{reader.data.filename}: tokenizer.ggml.model {kind!r} is not supported (only 'gpt2')")
    tokens = meta(reader, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in meta(reader, "tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False))
    tok.pre_tokenizer = _pre_tokenizer(str(meta(reader, "tokenizer.ggml.pre", "default")))
    tok.decoder = decoders.ByteLevel()
    types = meta(reader, "tokenizer.ggml.token_type", [])
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types, strict=False) if k == CONTROL]
    )
    bos, eos = meta(reader, "tokenizer.ggml.bos_token_id", None), meta(reader, "tokenizer.ggml.eos_token_id", None)
    add_bos = bool(meta(reader, "tokenizer.ggml.add_bos_token", False))
    return GGUFTokenizer(tok, None if bos is None else int(bos), None if eos is None else int(eos), add_bos)


def load_tokenizer(model: str | os.PathLike | GGUFReader) -> GGUFTokenizer:
    """Known model name, GGUF path or open reader -> tokenizer."""
    return tokenizer_from_reader(open_gguf(model))
