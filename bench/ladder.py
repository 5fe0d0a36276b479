"""A ladder of small Llama-style base models pretrained from scratch on offline English text.

`make models` runs ``python -m bench.ladder``: each rung trains once (bf16 autocast with fp32
master weights where the CPU has native bf16, else fp32) and is cached under
``cache_root()/models/<name>-<confighash>`` with its byte-level BPE tokenizer and a model card. All
rungs share one tokenizer and one tokenized corpus, cached in ``cache_root()/models/ladder-data-*``.
Threads: torch's default (the physical cores); ``OMP_NUM_THREADS=1`` was faster on shared cores.

Token budgets are per rung, not per second: at equal wall-clock the bigger model sees fewer tokens
and ends up *worse*, so the bigger rung gets the tokens it needs to beat the smaller one (measured,
recorded in the card; ``check_order`` verifies it).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from bench import assets
from bench.ladder_card import card_markdown
from bench.ladder_data import CORPUS_VERSION, ensure_data, publish
from bench.precision import resolve_precision as precision_rule


@dataclass(frozen=True)
class RungConfig:
    name: str
    d_model: int
    n_layers: int
    n_heads: int
    ffn: int  # SwiGLU intermediate size
    train_tokens: int  # budget: steps = train_tokens // (batch_size * seq_len)
    lr: float
    batch_size: int = 16
    seq_len: int = 256
    vocab_size: int = 8192
    warmup_frac: float = 0.05
    min_lr_frac: float = 0.1  # cosine decays to lr * min_lr_frac
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    val_percent: int = 1
    max_val_tokens: int = 32_768  # bounds the eval cost (the 1% split holds ~65k tokens)
    max_corpus_chars: int | None = None  # subsample the corpus (tests); None = all of it
    tokenizer_chars: int = 8_000_000  # BPE trains on a sample: as good, 3x faster than all 23M
    n_evals: int = 2  # validation points along training (the last at the end), in the card
    # "auto": bf16 autocast (fp32 master weights) where the CPU has native bf16 (AVX512-BF16/AMX);
    # fp32 elsewhere, since emulated bf16 matmuls on AVX2 ran 5x slower than fp32.
    precision: str = "auto"


# Budgets and learning rates come from a sweep over this exact recipe (same data order, init and
# schedule; run on a GPU, which matched a CPU run to 1%). Validation perplexity at equal tokens:
#   tokens       0.5M  1M   2M   3M   4M      (best lr / batch of 4, 8 or 16 sequences each)
#   d128 x 4     348   251  166
#   d256 x 6     399   269  183  146  116
# At equal tokens the bigger model is *worse* here, so ladder-m gets 2.5x the tokens of ladder-s
# (measured on CPU with these configs: val ppl 364 vs 531). Small batches win at these budgets
# (more steps for the same tokens) and cost the same per token on CPU. Sized for 2 cores without
# native bf16 (AVX2, fp32): 1,270 CPU-seconds in all, ~12-14 min on an idle machine; a few minutes
# where bf16 autocast runs at the planning speed (~10k tokens/s for ladder-s).
RUNGS: dict[str, RungConfig] = {
    r.name: r
    for r in (
        RungConfig(
            name="ladder-s", d_model=128, n_layers=4, n_heads=4, ffn=384,
            train_tokens=327_680, lr=3e-3, batch_size=4,
        ),
        RungConfig(
            name="ladder-m", d_model=256, n_layers=6, n_heads=4, ffn=640,
            train_tokens=819_200, lr=1.5e-3, batch_size=4,
        ),
    )
}  # fmt: skip


def config_hash(cfg: RungConfig) -> str:
    payload = {**dataclasses.asdict(cfg), "corpus_version": CORPUS_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]


def rung_dir(cfg: RungConfig) -> Path:
    return assets.cache_root() / "models" / f"{cfg.name}-{config_hash(cfg)}"


def non_embedding_params(cfg: RungConfig) -> int:
    """Closed form for a Llama stack without biases, n_kv_heads == n_heads:
    per layer q,k,v,o (4 d^2) + SwiGLU gate/up/down (3 d ffn) + 2 RMSNorms (2 d); final norm d."""
    d = cfg.d_model
    return cfg.n_layers * (4 * d * d + 3 * d * cfg.ffn + 2 * d) + d


def resolve_precision(precision: str) -> str:
    if precision == "auto":
        return precision_rule("auto", "cpu")
    if precision not in ("bf16-autocast", "fp32"):
        raise ValueError(f"precision must be auto, bf16-autocast or fp32, not {precision!r}")
    return precision


def _autocast(precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "bf16-autocast":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# --- model and training ---------------------------------------------------------------------------


def build_model(cfg: RungConfig, tok: Any) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    mcfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=cfg.d_model,
        intermediate_size=cfg.ffn,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads,
        max_position_embeddings=cfg.seq_len,
        tie_word_embeddings=True,  # at d=128 the embedding is most of the parameters
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM(mcfg)


def _windows(ids: np.ndarray, seq_len: int) -> torch.Tensor:
    n = len(ids) // seq_len
    return torch.from_numpy(ids[: n * seq_len].astype(np.int64)).view(n, seq_len)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, val: torch.Tensor, precision: str = "fp32", batch_size: int = 32
) -> float:
    """Mean next-token NLL (nats) over all windows; every window is full, so means average."""
    model.eval()
    total = 0.0
    for i in range(0, len(val), batch_size):
        x = val[i : i + batch_size]
        with _autocast(precision):
            logits = model(input_ids=x).logits
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.size(-1)),
            x[:, 1:].reshape(-1),
            reduction="sum",
        )
        total += nll.item()
    model.train()
    return total / (len(val) * (val.size(1) - 1))


def unigram_nll(train_ids: np.ndarray, val: torch.Tensor, vocab: int) -> float:
    """Add-one unigram model from the training tokens, scored on the same targets as the model."""
    counts = np.bincount(train_ids, minlength=vocab).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[val[:, 1:].numpy()].mean())


def _lr_at(step: int, total: int, cfg: RungConfig) -> float:
    warm = max(1, int(cfg.warmup_frac * total))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return cfg.lr * (
        cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress))
    )


def _pretrain(
    cfg: RungConfig,
    model: torch.nn.Module,
    train: torch.Tensor,
    val: torch.Tensor,
    steps: int,
    precision: str,
) -> tuple[list[float], list[dict[str, float]], float]:
    """The pretraining loop: AdamW with decoupled decay on matrices, clipped, cosine lr; the
    validation NLL at `cfg.n_evals` points (the last is the final score)."""
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.95),
        fused=False,
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(train), generator=gen)
    pos = 0
    eval_at = {round(steps * (k + 1) / cfg.n_evals) for k in range(cfg.n_evals)} | {steps}
    curve: list[dict[str, float]] = []
    losses: list[float] = []
    t0 = time.time()
    bar = tqdm(range(steps), desc=cfg.name, unit="step", dynamic_ncols=True)
    for step in bar:
        if pos + cfg.batch_size > len(order):  # next epoch, fresh shuffle
            order, pos = torch.randperm(len(train), generator=gen), 0
        x = train[order[pos : pos + cfg.batch_size]]
        pos += cfg.batch_size
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, steps, cfg)
        with _autocast(precision):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 10 == 0:
            tps = (step + 1) * cfg.batch_size * cfg.seq_len / (time.time() - t0)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", tok_s=f"{tps:,.0f}")
        if step + 1 in eval_at:
            val_nll = evaluate(model, val, precision)  # the last one is the final score
            curve.append(
                {
                    "tokens": (step + 1) * cfg.batch_size * cfg.seq_len,
                    "val_ppl": round(math.exp(val_nll), 2),
                    "seconds": round(time.time() - t0, 1),
                }
            )
            bar.write(f"[{cfg.name}] {curve[-1]}")
    bar.close()
    return losses, curve, val_nll


def train_rung(cfg: RungConfig, out: Path) -> dict[str, Any]:
    """Pretrain one rung into directory `out` (model, tokenizer, card); return the card."""
    from transformers import AutoTokenizer

    data = ensure_data(cfg)
    meta = json.loads((data / "meta.json").read_text())
    tok = AutoTokenizer.from_pretrained(data / "tokenizer")
    train_ids = np.load(data / "train.npy")
    train = _windows(train_ids, cfg.seq_len)
    val = _windows(np.load(data / "val.npy"), cfg.seq_len)[: cfg.max_val_tokens // cfg.seq_len]

    model = build_model(cfg, tok)
    n_total = sum(p.numel() for p in model.parameters())
    n_emb = model.get_input_embeddings().weight.numel()
    steps = max(1, cfg.train_tokens // (cfg.batch_size * cfg.seq_len))
    precision = resolve_precision(cfg.precision)
    t0, c0 = time.time(), _cpu_seconds()
    losses, curve, val_nll = _pretrain(cfg, model, train, val, steps, precision)
    seconds, cpu_seconds = time.time() - t0, _cpu_seconds() - c0
    uni = unigram_nll(train_ids, val, len(tok))
    tail = losses[-max(1, steps // 20) :]
    card = {
        "name": cfg.name,
        "architecture": "LlamaForCausalLM (RMSNorm, SwiGLU, RoPE, tied embeddings)",
        "layers": cfg.n_layers,
        "d_model": cfg.d_model,
        "heads": cfg.n_heads,
        "ffn": cfg.ffn,
        "seq_len": cfg.seq_len,
        "vocab_size": len(tok),
        "params_total": n_total,
        "params_non_embedding": n_total - n_emb,
        "tokens_seen": steps * cfg.batch_size * cfg.seq_len,
        "corpus_train_tokens": meta["train_tokens"],
        "epochs": round(steps * cfg.batch_size * cfg.seq_len / meta["train_tokens"], 3),
        "steps": steps,
        "wall_seconds": round(seconds, 1),
        # CPU time / threads estimates the wall time on an idle machine when cores are shared.
        "cpu_seconds": round(cpu_seconds, 1),
        "threads": torch.get_num_threads(),
        "tokens_per_second": round(steps * cfg.batch_size * cfg.seq_len / seconds),
        "precision": precision + (", fp32 master weights" if precision != "fp32" else ""),
        "train_loss_first": round(sum(losses[: len(tail)]) / len(tail), 4),
        "train_loss": round(sum(tail) / len(tail), 4),
        "val_tokens": int(val[:, 1:].numel()),
        "val_loss": round(val_nll, 4),
        "val_ppl": round(math.exp(val_nll), 2),
        "unigram_val_ppl": round(math.exp(uni), 2),
        "val_curve": curve,
        "corpus": {k: meta[k] for k in ("composition", "excluded", "train_chars", "val_chars")},
        "seed": cfg.seed,
        "config": dataclasses.asdict(cfg),
        "config_hash": config_hash(cfg),
        "corpus_version": CORPUS_VERSION,
        "torch": torch.__version__,
    }
    model.save_pretrained(out)
    tok.model_max_length = cfg.seq_len  # trained on seq_len windows; RoPE beyond is untested
    tok.save_pretrained(out)
    (out / "model_card.json").write_text(json.dumps(card, indent=1) + "\n")
    (out / "README.md").write_text(card_markdown(card))
    return card


def ensure_rung(rung: str | RungConfig) -> Path:
    """Directory of a trained rung (trained now if not cached), loadable with from_pretrained."""
    cfg = RUNGS[rung] if isinstance(rung, str) else rung
    out = rung_dir(cfg)
    if (out / "model_card.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{cfg.name}-"))
    try:
        train_rung(cfg, tmp)
        publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def check_order(names: list[str]) -> list[str]:
    """Problems with the ladder: a rung with more non-embedding parameters must have a lower
    validation perplexity than every smaller rung (same tokenizer, same validation tokens)."""
    cards = sorted(
        (json.loads((rung_dir(RUNGS[n]) / "model_card.json").read_text()) for n in names),
        key=lambda c: c["params_non_embedding"],
    )
    return [
        f"{b['name']} (val ppl {b['val_ppl']}) is not better than {a['name']} ({a['val_ppl']})"
        for a, b in itertools.pairwise(cards)
        if b["val_ppl"] >= a["val_ppl"]
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Pretrain the model ladder (cached by config hash).")
    p.add_argument("names", nargs="*", help=f"rungs (default: all of {list(RUNGS)})")
    args = p.parse_args(argv)
    names = args.names or list(RUNGS)
    unknown = [n for n in names if n not in RUNGS]
    if unknown:
        p.error(f"unknown rungs {unknown}; valid: {list(RUNGS)}")
    t0 = time.time()
    for n in names:
        d = ensure_rung(n)
        c = json.loads((d / "model_card.json").read_text())
        print(
            f"[ladder] {n}: {c['params_non_embedding']:,} non-emb params, "
            f"{c['tokens_seen']:,} tokens, {c['wall_seconds']} s, val ppl {c['val_ppl']} "
            f"(unigram {c['unigram_val_ppl']}) -> {d}",
            flush=True,
        )
    print(f"[ladder] done in {time.time() - t0:.0f} s", flush=True)
    problems = check_order(names) if len(names) > 1 else []
    for msg in problems:
        print(f"[ladder] WARNING: {msg}", flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
