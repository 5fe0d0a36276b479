"""Prefix tuning (Li & Liang 2021): learnable key/value prefixes at every layer, reparameterized
by an MLP during training. The MLP is dropped after training (peft saves the computed prefixes),
so the inference extra is num_virtual_tokens x layers x 2 x kv_dim.

`init: text` starts the prefixes from the keys and values the frozen model computes for the
first num_virtual_tokens tokens of `init_text` (the papers' "activations of real words"): the
model starts out reading a plausible context instead of random keys, whose first-step loss on
SmolLM2 was 3x the base model's. A text shorter than that is repeated to length, as peft does
for prompt tuning's text init. Random init is peft's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import PositiveInt

from bench.methods import register, require
from bench.methods._peft_common import PeftMethod, VirtualTokensConfig
from bench.methods.prompt_tuning import text_init_settings
from bench.models import ModelInfo

PREFIX_LABELS = {"num_virtual_tokens": "tokens", "init": "init", "init_text": "init_text"}
PREFIX_TUNING_LABELS = {**PREFIX_LABELS, "encoder_hidden_size": "hidden"}  # + its MLP's width


def prefix_params(model: Any) -> int:
    """Size of the per-layer key/value prefixes peft stores for inference."""
    pc = model.peft_config["default"]
    return pc.num_virtual_tokens * pc.num_layers * 2 * pc.token_dim


class PrefixInitConfig(VirtualTokensConfig):
    init: Literal["random", "text"]
    init_text: str | None


class PrefixTuningConfig(PrefixInitConfig):
    encoder_hidden_size: PositiveInt  # width of the reparameterization MLP


def real_token_kv(model: Any, tokenizer_dir: str, text: str, n: int) -> Any:
    """[n, layers * 2 * kv_dim]: the frozen model's keys and values of the first n tokens of
    `text`, in peft's prefix layout."""
    import torch
    from peft.tuners.cartridge.utils import prompt_embeddings_from_past_key_values
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    require(ids.shape[1] > 0, "method.init_text", "must have at least one token")
    ids = ids.repeat(1, -(-n // ids.shape[1]))[:, :n]  # repeated to n tokens (peft's rule)
    with torch.no_grad(), model.disable_adapter():
        out = model(input_ids=ids.to(model.device), use_cache=True)
    return prompt_embeddings_from_past_key_values(out.past_key_values, num_virtual_tokens=n)


def set_mlp_output(encoder: Any, target: Any) -> None:
    """Make peft's reparameterization MLP (Embedding -> Linear -> tanh -> Linear) output `target`
    row for row: virtual token i drives hidden unit i only, and the output layer maps that unit
    to row i. Exact while num_virtual_tokens <= the MLP width; training then moves every weight.
    """
    import torch

    emb, lin1, lin2 = encoder.embedding, encoder.transform[0], encoder.transform[2]
    n = target.shape[0]
    width = min(lin1.out_features, emb.weight.shape[1])  # MLP width, model's key/value width
    require(n <= width, "method.num_virtual_tokens", f"must be <= {width} for init=text")
    with torch.no_grad():
        emb.weight.zero_()
        emb.weight[:, :n] = torch.eye(n)
        lin1.weight.zero_()
        lin1.weight[:n, :n] = torch.eye(n)
        lin1.bias.zero_()  # hidden unit i = tanh(1) for token i, 0 elsewhere
        lin2.weight.zero_()
        lin2.weight[:, :n] = (target / torch.tanh(torch.tensor(1.0))).T.to(lin2.weight.dtype)
        lin2.bias.zero_()


class PrefixTuning(PeftMethod):
    name = "prefix_tuning"
    Config: type[PrefixInitConfig] = PrefixTuningConfig
    label_keys = PREFIX_TUNING_LABELS
    order = 4
    note = (
        "Prefix tuning (Li and Liang, 2021): learnable key/value prefixes at every attention "
        "layer, reparameterised through an MLP during training for stability; after training "
        "only the prefixes are kept. Initialised from the keys and values of real tokens."
    )
    projection = True
    wants_tokenizer = True  # text init tokenizes init_text

    def validate(self, cfg: Mapping[str, Any], info: ModelInfo) -> None:
        s = self.parse(cfg)
        if s.init == "text":
            require(bool(s.init_text), "method.init_text", "required when init=text")

    def settings(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        return text_init_settings(super().settings(cfg))

    def peft_config(self, cfg: Mapping[str, Any], tokenizer_dir: str | None) -> Any:
        from peft import PrefixTuningConfig

        kwargs: dict[str, Any] = {}
        if self.projection:
            kwargs["encoder_hidden_size"] = cfg["encoder_hidden_size"]
        return PrefixTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=cfg["num_virtual_tokens"],
            prefix_projection=self.projection,
            **kwargs,
        )

    def apply(self, model: Any, cfg: Mapping[str, Any], tokenizer_dir: str | None = None) -> Any:
        tok_dir = tokenizer_dir or model.config.name_or_path  # the folder it was loaded from
        model = super().apply(model, cfg, tokenizer_dir)
        if cfg["init"] == "text":
            kv = real_token_kv(model, tok_dir, cfg["init_text"], cfg["num_virtual_tokens"])
            encoder = model.prompt_encoder[model.active_adapter]
            if self.projection:
                set_mlp_output(encoder, kv)
            else:
                encoder.load_prompt_embeddings(kv)
        return model

    def inference_extra_params(self, model: Any) -> int:
        return prefix_params(model)


register(PrefixTuning())
