"""LoRA (Hu et al. 2021): W' = W + (alpha/r) B A with A random, B zero, W frozen."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.methods import register, require
from bench.methods._peft_common import LoraSettings, PeftMethod, check_targets
from bench.models import ModelInfo

INITS = {"kaiming": True, "gaussian": "gaussian"}  # peft `init_lora_weights` values


def lora_config(cfg: Mapping[str, Any], tokenizer_dir: str | None = None) -> Any:
    from peft import LoraConfig

    from bench import vocab

    tokens: list[int] | dict[str, list[int]] | None = None
    if cfg.get("train_new_tokens"):
        ids = vocab.added_ids(tokenizer_dir or "")
        if not ids:
            raise ValueError("method.train_new_tokens: the model has no vocabulary expansion")
        # tied: the input embedding's adapter, which peft ties the output layer to
        tokens = ids if vocab.manifest(tokenizer_dir or "")["tied"] else {
            "embed_tokens": ids, "lm_head": ids}  # fmt: skip
    return LoraConfig(
        trainable_token_indices=tokens,
        task_type="CAUSAL_LM",
        r=cfg["r"],
        lora_alpha=cfg["alpha"],
        lora_dropout=cfg["dropout"],
        target_modules=cfg["target_modules"],
        init_lora_weights=INITS[cfg["init"]],
        use_rslora=cfg["rslora"],
        bias="none",
    )


def check_lora(s: LoraSettings, cfg: Mapping[str, Any], info: ModelInfo) -> None:
    require(s.alpha > 0, "method.alpha", f"must be > 0, got {s.alpha!r}")
    require(0.0 <= s.dropout < 1.0, "method.dropout", f"must be in [0, 1), got {s.dropout!r}")
    check_targets(cfg, info)
    require(
        not s.train_new_tokens or info.added_tokens > 0,
        "method.train_new_tokens",
        "true trains the rows of a vocabulary expansion; set vocab.k > 0, or false",
    )


LORA_LABELS = {"target_modules": "targets", "r": "r", "alpha": "alpha", "dropout": "dropout",
               "init": "init", "rslora": "rslora",
               "train_new_tokens": "new-tokens"}  # fmt: skip


class LoRA(PeftMethod):
    name = "lora"
    Config = LoraSettings
    label_keys = LORA_LABELS
    order = 6
    note = (
        "LoRA (Hu et al., 2021): the frozen weight W gets a low-rank update "
        "W' = W + (alpha/r)·B·A with A random and B zero, so training starts exactly at the "
        "base model (rsLoRA scales by alpha/sqrt(r)). Can be merged into W, leaving no "
        "inference overhead."
    )

    def validate(self, cfg: Mapping[str, Any], info: ModelInfo) -> None:
        check_lora(self.parse(cfg), cfg, info)

    def label_value(self, key: str, value: Any) -> str:
        """Target lists without the `_proj` every Llama projection ends in: `targets=q+k`."""
        if key == "target_modules" and isinstance(value, list):
            return "+".join(str(m).removesuffix("_proj") for m in value)
        return super().label_value(key, value)

    def peft_config(self, cfg: Mapping[str, Any], tokenizer_dir: str | None) -> Any:
        return lora_config(cfg, tokenizer_dir)


register(LoRA())
