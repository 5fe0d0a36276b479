"""bench/stream.py: the training stream's data options (replay, duplicates, epochs) on the tiny
task with the character tokenizer, and that their neutral values change nothing."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from bench import config, data, results, stream
from bench.methods import ConfigError
from bench.models import char_tokenizer
from bench.train import batch_stream, encode
from tests.conftest import compose, tiny_cfg

TOK = char_tokenizer()
NEUTRAL_CFG = {"replay_share": 0.0, "replay_source": "brown", "duplicate_share": 0.0,
               "duplicate_pool": 16, "epochs": None}  # fmt: skip


def _examples(n: int = 64) -> list:
    task = data.build({**compose(["task=tiny"])["task"], "n_train": n})
    return [encode(e, TOK, 32) for e in task.splits["train"]]


def _stream(d: dict, *, seed: int = 0, batch: int = 8, steps: int = 20) -> tuple:
    return stream.stream(
        _examples(), {**NEUTRAL_CFG, **d}, tok=TOK, batch_size=batch, grad_accum=1,
        steps=steps, seq_len=32, seed=seed, pad_id=TOK.pad_token_id,
    )  # fmt: skip


def test_neutral_stream_is_the_task_stream() -> None:
    ex = _examples()
    got, _ = _stream({})
    want = batch_stream(ex, batch_size=8, seed=0, pad_id=TOK.pad_token_id)
    for a, b in itertools.islice(zip(got, want, strict=True), 12):  # past one 8-batch epoch
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert stream.active(NEUTRAL_CFG) == {} and stream.label_suffix(NEUTRAL_CFG) == ""


def test_neutral_data_keeps_run_ids() -> None:
    cfg = compose(["method=lora", "model=tiny-random", "task=tiny"])
    old = {k: v for k, v in cfg.items() if k != "data"}  # a config from before `data` existed
    assert results.run_id(cfg) == results.run_id(old)
    on = {**cfg, "data": {**cfg["data"], "replay_share": 0.1}}
    assert results.run_id(on) != results.run_id(cfg)
    # an inactive option's sub-setting is no training setting
    pool = {**cfg, "data": {**cfg["data"], "duplicate_pool": 3}}
    assert results.run_id(pool) == results.run_id(cfg)


def test_replay_token_share_and_chunks() -> None:
    batches, st = _stream({"replay_share": 0.3}, steps=40)
    drawn = list(itertools.islice(batches, 40))
    # whole 32-token chunks: the running share ends within one chunk of the target
    assert abs(st.replay_tokens - 0.3 * st.tokens) <= 32
    assert st.replay_tokens % 32 == 0 and st.replay_tokens == st.replay_labels
    assert all(b["input_ids"].shape[0] == 8 for b in drawn)  # the budget's batch is unchanged
    # answers are the task's only labels, so replay's loss share is the larger one
    s = st.block()
    assert s["replay_loss_share"] > s["replay_token_share"] == pytest.approx(0.3, abs=0.01)
    # a replay row is a full chunk labelled on every token
    full = [r for b in drawn for r in range(8) if bool((b["labels"][r] == b["input_ids"][r]).all())]
    assert full
    # every seed replays the same text in the same order
    a = stream.replay_chunks(TOK, 32, 5)
    assert [c.input_ids for c in a] == [c.input_ids for c in stream.replay_chunks(TOK, 32, 5)]
    assert all(len(c.input_ids) == 32 and c.labels == c.input_ids for c in a)


def test_replay_is_disjoint_from_heldout_text() -> None:
    from bench.metrics.nll import heldout_documents, heldout_texts

    held = set(heldout_texts(200, part="nll")) | set(heldout_texts(50, part="prefix"))
    held |= {p for doc in heldout_documents(12) for p in doc.split("\n\n")}
    from bench import corpora

    assert held and not held & set(corpora.brown_train_paragraphs())


def test_duplicates_and_epochs() -> None:
    ex = _examples(64)
    dup = stream.shape_examples(
        ex, {"duplicate_share": 0.5, "duplicate_pool": 4}, per_step=8, steps=10
    )
    assert len(dup) == 128  # 64 originals + 64 copies: copies are half
    copies = dup[64:]
    assert len({tuple(e.input_ids) for e in copies}) == 4
    sub = stream.shape_examples(ex, {"epochs": 4}, per_step=8, steps=16)
    assert len(sub) == 8 * 16 // 4  # 4 passes over 32 examples fill 16 steps of 8
    with pytest.raises(ValueError, match=r"data\.epochs: 0\.5 needs 256 training examples"):
        stream.shape_examples(ex, {"epochs": 0.5}, per_step=8, steps=16)
    assert stream.label_suffix({**NEUTRAL_CFG, "epochs": 4}) == "[epochs=4]"
    assert stream.label_suffix({**NEUTRAL_CFG, "duplicate_share": 0.5}) == "[dup=0.5x16]"


def test_bad_data_values_fail_before_work(tmp_path: Path) -> None:
    for bad, key in (
        ("data.replay_share=1.5", "replay_share"),
        ("data.replay_source=wiki", "replay_source"),
    ):
        with pytest.raises(ConfigError, match=key):
            config.check(tiny_cfg("lora", tmp_path, bad))


@pytest.mark.integration
def test_replay_run_records_its_mix(tmp_path: Path) -> None:
    from bench.run import run_one

    rec = run_one(tiny_cfg("lora", tmp_path, "data.replay_share=0.25"))
    assert rec["status"] == "success", rec["error"]
    assert rec["label"] == "lora[replay=0.25]"
    s = rec["train"]["stream"]
    assert s["replay_token_share"] == pytest.approx(0.25, abs=32 / rec["train"]["tokens"])
    plain = run_one(tiny_cfg("lora", tmp_path))
    assert plain["label"] == "lora" and plain["train"].get("stream") is None
    assert plain["run_id"] != rec["run_id"]


def test_tag_names_a_row_and_is_no_training_setting(tmp_path: Path) -> None:
    cfg = compose(["method=lora", "model=tiny-random", "task=tiny"])
    tagged = {**cfg, "tag": "lr/3", "data": {**cfg["data"], "replay_share": 0.1}}
    assert results.run_label(tagged) == "lora[replay=0.1]@lr/3"
    assert results.run_id(tagged) == results.run_id({**tagged, "tag": None})
    with pytest.raises(ConfigError, match="tag"):
        config.check(tiny_cfg("lora", tmp_path, "tag='a b'"))


def test_train_version_is_in_new_run_ids_only(tmp_path: Path) -> None:
    """Runs of the fixed training code get new ids; records of version 1 (no key) keep theirs,
    are re-evaluated as version 1, and a new run cannot claim version 1."""
    from bench.reevaluate import current_config
    from bench.run import run_one

    cfg = compose(["method=lora", "model=tiny-random", "task=tiny"])
    assert cfg["train_version"] == results.TRAIN_VERSION == 2
    old = {k: v for k, v in cfg.items() if k != "train_version"}
    assert results.run_id(cfg) != results.run_id(old)
    assert results.run_id({**cfg, "train_version": None}) == results.run_id(old)
    assert "train_version" not in current_config(old, cfg, "s", str(tmp_path))
    with pytest.raises(ConfigError, match="train_version: None; this code trains version 2"):
        run_one(tiny_cfg("lora", tmp_path, "train_version=null"))
