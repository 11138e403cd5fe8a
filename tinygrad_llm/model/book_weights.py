"""Chapter 5's weight loading: ``load_weights_into_gpt(gpt, params)`` for the book's ``params`` dict.

The book reads OpenAI's TensorFlow checkpoint into a nested dict (``download_and_load_gpt2`` in its
gpt_download.py) and copies it into the model tensor by tensor:

    params = {"wte": (vocab, C), "wpe": (context, C), "g": (C,), "b": (C,),        # final LayerNorm: g, b
              "blocks": [{"attn": {"c_attn": {"w": (C, 3C), "b": (3C,)}, "c_proj": {"w": (C, C), "b": (C,)}},
                          "mlp": {"c_fc": {"w": (C, 4C), "b": (4C,)}, "c_proj": {"w": (4C, C), "b": (C,)}},
                          "ln_1": {"g": (C,), "b": (C,)}, "ln_2": {"g": (C,), "b": (C,)}}, ...]}

The book splits ``c_attn`` into its query, key and value thirds for three Linear layers; here the three
projections are one fused ``W_qkv`` whose rows are exactly [queries; keys; values], so the split and the
re-joining cancel: ``W_qkv.weight = c_attn.w.T``. TensorFlow's weights are (in, out), ours (out, in) as
torch.nn.Linear: every w is transposed, as in the book. ``params_from_hf`` builds the same dict from a
Hugging Face GPT-2 folder (whose Conv1D weights are also (in, out)), for those without TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tinygrad_llm import backend

if TYPE_CHECKING:
    from tinygrad_llm.backend import Array
    from tinygrad_llm.model.gpt import GPTModel
    from tinygrad_llm.nn import Parameter


def assign(param: Parameter, right: Array, name: str) -> None:
    """Copy ``right`` into the Parameter ``param`` in place (its dtype and device kept), as the book's
    ``assign``: a shape mismatch raises ValueError naming the tensor."""
    right = np.asarray(right)
    if tuple(param.shape) != right.shape:
        raise ValueError(
            f"load_weights_into_gpt: shape mismatch for {name}: the model has {tuple(param.shape)}, "
            f"params give {right.shape}"
        )
    param.data = backend.to_device(np.ascontiguousarray(right, dtype=param.data.dtype), param.device)


def load_weights_into_gpt(gpt: GPTModel, params: dict) -> GPTModel:
    """Load the book's chapter-5 ``params`` (OpenAI's GPT-2 weights as nested NumPy arrays) into ``gpt``,
    a GPTModel with the matching configuration (``qkv_bias=True``, as the book sets for these weights).
    Returns ``gpt``."""
    blocks = params["blocks"]
    if len(blocks) != len(gpt.trf_blocks):
        raise ValueError(f"load_weights_into_gpt: params have {len(blocks)} blocks, the model {len(gpt.trf_blocks)}")
    assign(gpt.pos_emb.weight, params["wpe"], "wpe")
    assign(gpt.tok_emb.weight, params["wte"], "wte")
    for b, block in enumerate(blocks):
        where = f"blocks[{b}]"
        att = gpt.trf_blocks[b].att
        assign(att.W_qkv.weight, block["attn"]["c_attn"]["w"].T, f"{where}.attn.c_attn.w")  # (C, 3C) -> (3C, C)
        if att.W_qkv.bias is None:
            raise ValueError(
                "load_weights_into_gpt: the model has no QKV bias but GPT-2's weights have one: "
                "build it with qkv_bias=True, as the book does"
            )
        assign(att.W_qkv.bias, block["attn"]["c_attn"]["b"], f"{where}.attn.c_attn.b")
        assign(att.out_proj.weight, block["attn"]["c_proj"]["w"].T, f"{where}.attn.c_proj.w")
        assign(att.out_proj.bias, block["attn"]["c_proj"]["b"], f"{where}.attn.c_proj.b")
        ff = gpt.trf_blocks[b].ff.layers
        assign(ff[0].weight, block["mlp"]["c_fc"]["w"].T, f"{where}.mlp.c_fc.w")
        assign(ff[0].bias, block["mlp"]["c_fc"]["b"], f"{where}.mlp.c_fc.b")
        assign(ff[2].weight, block["mlp"]["c_proj"]["w"].T, f"{where}.mlp.c_proj.w")
        assign(ff[2].bias, block["mlp"]["c_proj"]["b"], f"{where}.mlp.c_proj.b")
        for norm, key in ((gpt.trf_blocks[b].norm1, "ln_1"), (gpt.trf_blocks[b].norm2, "ln_2")):
            assign(norm.scale, block[key]["g"], f"{where}.{key}.g")
            assign(norm.shift, block[key]["b"], f"{where}.{key}.b")
    assign(gpt.final_norm.scale, params["g"], "g")
    assign(gpt.final_norm.shift, params["b"], "b")
    if gpt.out_head.weight is not gpt.tok_emb.weight:  # GPT-2 ties the output head to the token embedding
        assign(gpt.out_head.weight, params["wte"], "wte (as out_head)")
    return gpt


def params_from_hf(path_or_name: str | Path) -> dict:
    """The book's ``params`` dict from a Hugging Face GPT-2 folder or name (model.safetensors + config.json)."""
    from tinygrad_llm.model.pretrained import (
        WEIGHTS_FILE,
        PretrainedSafetensors,
        config_from_hf,
        normalise_hf_key,
        read_config,
        resolve_folder,
    )

    folder = resolve_folder(path_or_name)
    config = config_from_hf(read_config(folder), folder / "config.json")
    st = PretrainedSafetensors(folder / WEIGHTS_FILE)
    tensors = {normalise_hf_key(key): key for key in st.entries}

    def get(name: str) -> np.ndarray:
        if name not in tensors:
            raise ValueError(f"{folder / WEIGHTS_FILE}: no tensor {name!r}")
        return np.array(st.array(tensors[name]), dtype=np.float32)

    def pair(prefix: str) -> dict[str, np.ndarray]:
        return {"w": get(f"{prefix}.weight"), "b": get(f"{prefix}.bias")}

    def norm(prefix: str) -> dict[str, np.ndarray]:
        return {"g": get(f"{prefix}.weight"), "b": get(f"{prefix}.bias")}

    blocks = [
        {
            "attn": {"c_attn": pair(f"h.{i}.attn.c_attn"), "c_proj": pair(f"h.{i}.attn.c_proj")},
            "mlp": {"c_fc": pair(f"h.{i}.mlp.c_fc"), "c_proj": pair(f"h.{i}.mlp.c_proj")},
            "ln_1": norm(f"h.{i}.ln_1"),
            "ln_2": norm(f"h.{i}.ln_2"),
        }
        for i in range(config.n_layers)
    ]
    return {
        "wte": get("wte.weight"),
        "wpe": get("wpe.weight"),
        "blocks": blocks,
        "g": get("ln_f.weight"),
        "b": get("ln_f.bias"),
    }
