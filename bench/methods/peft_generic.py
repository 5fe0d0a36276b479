"""Any other peft method (IA3, AdaLoRA, DoRA via LoraConfig(use_dora=True), LoHa, ...):
`method=peft method.peft_type=IA3 method.kwargs='{target_modules: [k_proj, v_proj, down_proj],
feedforward_modules: [down_proj]}'`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.methods import MethodConfig, register, require
from bench.methods._peft_common import PeftMethod
from bench.models import ModelInfo


def _config_classes() -> dict[str, Any]:
    import peft

    return {
        n[: -len("Config")]: getattr(peft, n)
        for n in dir(peft)
        if n.endswith("Config") and n != "PeftConfig" and isinstance(getattr(peft, n), type)
    }


PEFT_LABELS = {"peft_type": "type", "kwargs": "kwargs"}


class GenericPeftConfig(MethodConfig):
    peft_type: str
    kwargs: dict[str, Any] | None


class GenericPeft(PeftMethod):
    name = "peft"
    Config = GenericPeftConfig
    label_keys = PEFT_LABELS  # label() below names the type only: `peft:<type>`
    order = 8
    swept = False  # a peft type and its kwargs must be chosen first
    note = (
        "Generic peft method: any other peft configuration type (IA3, AdaLoRA, DoRA, LoHa, "
        "...) built from its config type and keyword arguments; see the run config for which."
    )

    def validate(self, cfg: Mapping[str, Any], info: ModelInfo) -> None:
        t = self.parse(cfg).peft_type
        valid = sorted(_config_classes())
        require(t in valid, "method.peft_type", f"got {t!r}; valid: {valid}")

    def label(self, cfg: Mapping[str, Any]) -> str:
        return f"peft:{cfg['peft_type']}"

    def peft_config(self, cfg: Mapping[str, Any], tokenizer_dir: str | None) -> Any:
        cls = _config_classes()[cfg["peft_type"]]
        return cls(task_type="CAUSAL_LM", **dict(cfg["kwargs"] or {}))


register(GenericPeft())
