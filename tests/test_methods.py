"""Every method: trainable-parameter counts from closed forms, QLoRA really 4-bit, loss falls."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import yaml

from bench import methods, models
from tests.conftest import CONF, METHODS, compose

TINY = yaml.safe_load((CONF / "model" / "tiny-random.yaml").read_text())
D, L, H, KV, FFN = (
    TINY["hidden_size"],
    TINY["num_layers"],
    TINY["num_heads"],
    TINY["num_kv_heads"],
    TINY["intermediate_size"],
)
KV_DIM = D // H * KV
SHAPES = {  # (in, out) of each linear in a Llama block
    "q_proj": (D, D),
    "k_proj": (D, KV_DIM),
    "v_proj": (D, KV_DIM),
    "o_proj": (D, D),
    "gate_proj": (D, FFN),
    "up_proj": (D, FFN),
    "down_proj": (FFN, D),
}


def mcfg(name: str, **over: Any) -> dict[str, Any]:
    c = compose([f"method={name}"])["method"]  # Hydra composes qlora.yaml from lora.yaml
    c.update(over)
    return c


def build(name: str, **over: Any) -> Any:
    c = mcfg(name, **over)
    m = methods.get(name)
    m.validate(c, models.model_info(TINY))
    model, _ = models.load(
        TINY, dtype=torch.float32, device="cpu", extra_kwargs=m.load_kwargs(c, "cpu")
    )
    tok_dir = str(models.model_dir(TINY)) if m.wants_tokenizer else None
    return m.apply(model, c, tok_dir)


def trainable(model: Any) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_registry_matches_configs() -> None:
    assert methods.names() == METHODS
    assert set(METHODS) >= {
        "full",
        "freeze",
        "prompt_tuning",
        "ptuning_v1",
        "prefix_tuning",
        "ptuning_v2",
        "lora",
        "qlora",
        "peft",
    }


@pytest.mark.parametrize(("r", "targets"), [(8, ["q_proj", "v_proj"]), (4, list(SHAPES))])
def test_lora_count(r: int, targets: list[str]) -> None:
    expected = L * sum(r * (SHAPES[t][0] + SHAPES[t][1]) for t in targets)
    assert trainable(build("lora", r=r, target_modules=targets)) == expected


def test_qlora_count_and_4bit() -> None:
    import bitsandbytes as bnb

    model = build("qlora", r=8)  # LoRA's targets (q, v); every linear of the base is 4-bit
    qv = [SHAPES["q_proj"], SHAPES["v_proj"]]
    assert trainable(model) == L * sum(8 * (i + o) for i, o in qv)
    assert trainable(build("qlora", r=8, target_modules="all-linear")) == L * sum(
        8 * (i + o) for i, o in SHAPES.values()
    )
    lin4 = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(lin4) == L * len(SHAPES)
    for m in lin4:
        w = m.weight
        assert w.dtype == torch.uint8 and not w.requires_grad
        logical = w.quant_state.shape.numel()
        assert w.numel() * w.element_size() * 2 == logical  # two 4-bit values per byte
        assert w.quant_state.quant_type == "nf4"
    # the LoRA adapters themselves are not quantized
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)


def test_prompt_tuning_count() -> None:
    assert trainable(build("prompt_tuning", num_virtual_tokens=10)) == 10 * D


def test_ptuning_v2_count() -> None:
    # deep prompt tuning: n key and n value vectors per layer, each of the KV width (GQA)
    assert trainable(build("ptuning_v2", num_virtual_tokens=7)) == L * 2 * 7 * KV_DIM


def test_prefix_tuning_count() -> None:
    n, h = 5, 16
    m = build("prefix_tuning", num_virtual_tokens=n, encoder_hidden_size=h)
    # peft sizes the prefix by the KV width (GQA): embedding n x KV_DIM, then an MLP
    # KV_DIM -> h -> L*2*KV_DIM (with biases), discarded after training
    assert trainable(m) == n * KV_DIM + (KV_DIM * h + h) + (h * L * 2 * KV_DIM + L * 2 * KV_DIM)
    assert methods.get("prefix_tuning").inference_extra_params(m) == n * L * 2 * KV_DIM


@pytest.mark.parametrize("name", ["prefix_tuning", "ptuning_v2"])
def test_prefix_starts_from_real_token_keys_and_values(name: str) -> None:
    """init=text: the prefix the adapter serves at step 0 is the frozen model's own keys and
    values of the init text's first tokens (through the MLP, for prefix tuning)."""
    from bench.methods.prefix_tuning import real_token_kv

    n, text = 6, "The quick brown fox jumps over the lazy dog again and again."
    model = build(name, num_virtual_tokens=n, init="text", init_text=text)
    served = model.prompt_encoder["default"](model.prompt_tokens["default"][None, :n])[0]
    expected = real_token_kv(model, str(models.model_dir(TINY)), text, n)
    assert served.shape == (n, L * 2 * KV_DIM)
    assert torch.allclose(served, expected, atol=1e-5)
    random_init = build(name, num_virtual_tokens=n, init="random")
    served0 = random_init.prompt_encoder["default"](random_init.prompt_tokens["default"][None, :n])
    assert not torch.allclose(served0[0], expected, atol=1e-2)


def test_ptuning_v1_count() -> None:
    n, h = 6, 32
    m = build("ptuning_v1", num_virtual_tokens=n, encoder="mlp", encoder_hidden_size=h)
    # embedding n x D, MLP D -> h -> h -> D (peft's PromptEncoder MLP has 3 linears)
    assert trainable(m) == n * D + (D * h + h) + (h * h + h) + (h * D + D)
    assert methods.get("ptuning_v1").inference_extra_params(m) == n * D


@pytest.mark.parametrize(("k", "modules"), [(1, "all"), (2, "mlp"), (-1, "self_attn")])
def test_freeze_count(k: int, modules: str) -> None:
    attn = sum(i * o for n, (i, o) in SHAPES.items() if n[0] in "qkvo")
    mlp = sum(i * o for n, (i, o) in SHAPES.items() if n[0] not in "qkvo")
    per = {"all": attn + mlp + 2 * D, "mlp": mlp, "self_attn": attn}[modules]
    assert trainable(build("freeze", trainable_layers=k, trainable_modules=modules)) == abs(k) * per


def test_full_count() -> None:
    """Starts from a fully frozen model: loaded Hugging Face weights already require grad, so a
    no-op `apply` would pass a test that did not freeze first."""
    model, _ = models.load(TINY, dtype=torch.float32, device="cpu")
    model.requires_grad_(False)
    m = methods.get("full").apply(model, mcfg("full"))
    assert trainable(m) == sum(p.numel() for p in m.parameters()) > 0


def test_generic_peft_ia3() -> None:
    m = build(
        "peft",
        peft_type="IA3",
        kwargs={
            "target_modules": ["k_proj", "v_proj", "down_proj"],
            "feedforward_modules": ["down_proj"],
        },
    )
    assert trainable(m) == L * (KV_DIM + KV_DIM + FFN)  # IA3 scales k, v outputs and down's input


@pytest.mark.parametrize("name", METHODS)
def test_loss_falls(name: str) -> None:
    """~20 steps on the tiny task: the mean of the last 5 losses is clearly below the first 5."""
    from bench import data
    from bench.train import batch_stream, encode, train

    torch.manual_seed(0)
    task = data.build(yaml.safe_load((CONF / "task" / "tiny.yaml").read_text()))
    model = build(name)
    _, tok = models.load(TINY, dtype=torch.float32, device="cpu")
    enc = [encode(e, tok, 32) for e in task.splits["train"]]
    # the tiny random model tolerates larger rates than the real-model defaults in conf/method
    lr = {"full": 3e-3, "freeze": 3e-3, "peft": 3e-2}.get(name, mcfg(name)["lr"])
    res = train(
        model,
        batch_stream(enc, batch_size=8, seed=0, pad_id=tok.pad_token_id),
        steps=20,
        lr=lr,
        precision="fp32",
        progress=False,
        warmup_ratio=0.0,
    )
    losses = [x[1] for x in res.loss_curve]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.05, (name, losses)


def test_backward_extent_stops_at_the_lowest_trainable_layer() -> None:
    """Freeze of the top block: the activation backward crosses that block, the final norm and
    the head only; methods with trainable tensors at the input (LoRA in block 0, soft prompts)
    cross everything. Counts from the tiny model's shapes."""
    from bench.measure import backward_extent, param_counts, train_flops_per_token

    block = 2 * D + sum(i * o for i, o in SHAPES.values())  # two norms + seven linears
    vocab = TINY.get("vocab_size") or build("full").get_output_embeddings().weight.shape[0]
    top = build("freeze", trainable_layers=1)
    assert backward_extent(top, L) == (block + D + vocab * D, 1)
    for name in ("lora", "prompt_tuning", "full"):
        m = build(name)
        assert backward_extent(m, L) == (param_counts(m)["total"], L), name
    n, t = param_counts(top)["total"], param_counts(top)["trainable"]
    assert train_flops_per_token(n, t, L, D, 32, (block, 1)) == (
        2 * n + 2 * block + 2 * t + 4 * L * 32 * D + 8 * 1 * 32 * D
    )
