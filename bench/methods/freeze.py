"""Freeze: train only some transformer blocks (the last k, or the first k when k < 0), optionally
only their MLP or attention, plus optional embeddings / lm_head. Saves only what trained."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import StrictInt

from bench.methods import Method, MethodConfig, register, require
from bench.models import ModelInfo


def selected_layers(k: int, num_layers: int) -> list[int]:
    return list(range(num_layers - k, num_layers)) if k > 0 else list(range(-k))


def decoder_layers(model: Any) -> Any:
    """The list of transformer blocks, whatever the architecture calls it (Llama/Qwen:
    model.layers, GPT-NeoX: gpt_neox.layers): the ModuleList as long as the model is deep."""
    import torch

    n = model.config.num_hidden_layers
    for _, m in model.named_modules():
        if isinstance(m, torch.nn.ModuleList) and len(m) == n:
            return m
    raise ValueError(f"no list of {n} transformer blocks found in {type(model).__name__}")


_ALIASES = {"self_attn": ("self_attn", "attention", "attn"), "mlp": ("mlp", "feed_forward")}


def sub_module(block: Any, cfg: Mapping[str, Any]) -> Any:
    want = cfg["trainable_modules"]
    for name in _ALIASES[want]:
        if hasattr(block, name):
            return getattr(block, name)
    children = [n for n, _ in block.named_children()]
    raise ValueError(
        f"method.trainable_modules={want!r}: block has none of {_ALIASES[want]}; "
        f"children: {children}"
    )


FREEZE_LABELS = {"trainable_layers": "k", "trainable_modules": "modules",
                 "train_embeddings": "emb", "train_lm_head": "head"}  # fmt: skip


class FreezeConfig(MethodConfig):
    trainable_layers: StrictInt
    trainable_modules: Literal["all", "mlp", "self_attn"]
    train_embeddings: bool
    train_lm_head: bool


class Freeze(Method):
    name = "freeze"
    Config = FreezeConfig
    label_keys = FREEZE_LABELS  # label() below writes them its own way: `freeze:mlp-2+emb`
    order = 1
    note = (
        "Partial fine-tuning: only selected transformer blocks train (the last k, or the first "
        "k when k is negative), optionally only their MLP or attention modules and optionally "
        "the embeddings or LM head; everything else is frozen. No extra inference parameters."
    )

    def validate(self, cfg: Mapping[str, Any], info: ModelInfo) -> None:
        k = self.parse(cfg).trainable_layers
        n = info.num_layers
        require(
            k != 0 and abs(k) <= n,
            "method.trainable_layers",
            f"got {k!r}; valid: 1..{n} (last k blocks) or -1..-{n} (first k); model has {n} layers",
        )

    def label(self, cfg: Mapping[str, Any]) -> str:
        """`freeze:mlp-2` = the MLPs of the last 2 blocks, `freeze:mlp-first2` those of the first
        2 (trainable_layers=-2), plus `+emb`/`+head`."""
        extra = ("+emb" if cfg["train_embeddings"] else "") + (
            "+head" if cfg["train_lm_head"] else ""
        )
        k = cfg["trainable_layers"]
        blocks = f"first{-k}" if isinstance(k, int) and k < 0 else str(k)
        return f"freeze:{cfg['trainable_modules']}-{blocks}{extra}"

    def apply(self, model: Any, cfg: Mapping[str, Any], tokenizer_dir: str | None = None) -> Any:
        model.requires_grad_(False)
        layers = decoder_layers(model)
        for i in selected_layers(cfg["trainable_layers"], len(layers)):
            block = layers[i]
            target = block if cfg["trainable_modules"] == "all" else sub_module(block, cfg)
            target.requires_grad_(True)
        if cfg["train_embeddings"]:
            model.get_input_embeddings().requires_grad_(True)
        if cfg["train_lm_head"]:  # tied embeddings make this train the embeddings too
            model.get_output_embeddings().requires_grad_(True)
        return model

    def save(self, model: Any, out: Path) -> int:
        from safetensors.torch import save_file

        out.mkdir(parents=True, exist_ok=True)
        trained = {
            n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad
        }
        save_file(trained, str(out / "trained_weights.safetensors"))
        return (out / "trained_weights.safetensors").stat().st_size


register(Freeze())
