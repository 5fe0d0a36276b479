"""Self-Instruct (Wang et al. 2022): a model writes its own instruction-tuning data from seeds.

`python -m bench.self_instruct [self_instruct=default|tiny] [model=smollm2-135m] [force=true]`
writes ``<cache>/self_instruct/<key>/`` (``data.jsonl``, ``manifest.json``) and prints the key, the
value of ``task.dataset`` for ``task=self_instruct``. Each round:

1. instruction generation: ``batch_size`` prompts, each listing 8 instructions as "Task k: ..."
   (6 human-written seed instructions, 2 generated ones once the pool has them) and asking for
   "Task 9:"; every line of a continuation is a candidate;
2. filtering, one reason per candidate, in this order: truncated (the last line when
   max_new_tokens cut it), empty, length (words outside [min_words, max_words]), keyword (the
   paper's list of what a language model cannot do: image, graph, file, draw, plot, go to, ...),
   start (not an ASCII letter or digit: punctuation, non-English), duplicate (equal to a pool
   instruction up to case and spacing), rouge (ROUGE-L >= rouge_threshold, 0.7 in the paper,
   against any instruction already in the pool, seeds included); the rest join the pool;
3. instance generation for each new instruction: a few seed examples as demonstrations, then
   the model writes an input (one line) and, given it, an output (one line); dropped when cut
   by max_new_tokens, when the output has no word, or when either is too long.

It stops when ``n_examples`` examples exist or after ``max_rounds`` rounds. Simplifications of
the paper, for a small model: one instance per instruction, no separate output-first prompt for
classification tasks, and one line per input and output (answers are generated to a newline).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, PositiveInt

from bench import instruct as si
from bench.data import natural_instructions as ni
from bench.data import self_instruct as store
from bench.methods import ConfigError, Strict, parse_config


class PipelineConfig(Strict):
    """conf/self_instruct_run.yaml: the settings, the generator, and how (not what) it runs."""

    self_instruct: dict[str, Any]
    model: dict[str, Any]
    device: str = Field(pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    threads: PositiveInt | None
    progress: bool
    force: bool


def check(cfg: Mapping[str, Any]) -> tuple[PipelineConfig, si.Settings]:
    """Every bad value fails here, naming its key and the valid choices, before a model loads."""
    from bench.config import _check_model, plain

    top = parse_config(PipelineConfig, plain(cfg), "")
    _check_model(top.model)
    s = parse_config(si.Settings, top.self_instruct, "self_instruct")
    n_seeds = len(ni.subtask_split()[0])
    if s.seed_demos + s.machine_demos > n_seeds:
        raise ConfigError(
            f"self_instruct.seed_demos: seed_demos + machine_demos = "
            f"{s.seed_demos + s.machine_demos} must be <= {n_seeds}, the seed subtasks"
        )
    return top, s


# ----------------------------------------------------------------------------- generation


def sample(
    model: Any,
    tok: Any,
    prompts: Sequence[str],
    g: si.Generation,
    *,
    batch_size: int,
    seed: int,
    stop: str | None,
    precision: str,
    device: str,
) -> list[tuple[str, bool]]:
    """(continuation, finished) per prompt, batched with transformers' generate(); finished: the
    row ended on EOS or `stop` (cut there) before max_new_tokens. Batches are length-sorted and
    seeded, so a setting and seed always give the same text on one machine."""
    import torch
    from transformers import StoppingCriteriaList

    from bench.generate import StopOnText, eos_ids, length_batches, model_device, pad_id
    from bench.train import autocast_ctx, prompt_ids

    enc = [prompt_ids(p, tok) for p in prompts]
    pad, eos = pad_id(model, tok), eos_ids(model, tok)
    opts: dict[str, Any] = {
        "do_sample": g.do_sample,
        "max_new_tokens": g.max_new_tokens,
        "num_beams": 1,
        "pad_token_id": pad,
        "eos_token_id": sorted(eos) or None,
    }
    # top-p only, as the paper (top_k=0 turns top-k off); None when greedy, so that no
    # generation_config default applies
    if g.do_sample:
        opts.update(temperature=g.temperature, top_p=g.top_p, top_k=0)
    else:
        opts.update(temperature=None, top_p=None, top_k=None)
    torch.manual_seed(seed)
    out: dict[int, tuple[str, bool]] = {}
    dev = model_device(model)
    for idx in length_batches(enc, batch_size, equal_lengths=False):
        n = max(len(enc[i]) for i in idx)
        ids = torch.full((len(idx), n), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, i in enumerate(idx):  # left-padded: every row's continuation starts at n
            ids[j, n - len(enc[i]) :] = torch.tensor(enc[i])
            mask[j, n - len(enc[i]) :] = 1
        crit = StoppingCriteriaList([StopOnText(tok, n, stop)]) if stop else None
        with torch.no_grad(), autocast_ctx(precision, device):
            gen = model.generate(
                input_ids=ids.to(dev), attention_mask=mask.to(dev), stopping_criteria=crit, **opts
            )
        for j, i in enumerate(idx):
            row = gen[j, n:].tolist()
            cut = next((k for k, t in enumerate(row) if t in eos), None)
            text = tok.decode(row[:cut], skip_special_tokens=True)
            finished = cut is not None or bool(stop and stop in text)
            out[i] = (text.split(stop, 1)[0] if stop else text, finished)
    return [out[i] for i in range(len(prompts))]


def _seed(*parts: object) -> int:
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:8], 16)


@dataclass
class Run:
    """One pipeline run's state: the model, the pool, the examples and every count."""

    model: Any
    tok: Any
    s: si.Settings
    device: str
    seeds: list[str]
    demos: list[list[tuple[str, str, str]]]
    pool: si.Pool
    rng: random.Random
    rows: list[dict[str, str]] = field(default_factory=list)
    dropped: dict[str, Counter[str]] = field(
        default_factory=lambda: {"instructions": Counter(), "instances": Counter()}
    )
    generated: Counter[str] = field(default_factory=Counter)
    prompts: int = 0

    def gen(self, prompts: list[str], g: si.Generation, stop: str | None, *seed: object) -> Any:
        return sample(
            self.model,
            self.tok,
            prompts,
            g,
            batch_size=self.s.batch_size,
            seed=_seed(self.s.seed, *seed),
            stop=stop,
            precision=self.s.precision,
            device=self.device,
        )

    def instructions(self, rnd: int) -> list[str]:
        """One round of instruction generation and filtering: the instructions kept."""
        prompts = [
            si.instruction_prompt(self.rng, self.seeds, self.pool, self.s)
            for _ in range(self.s.batch_size)
        ]
        self.prompts += len(prompts)
        kept = []
        for text, finished in self.gen(prompts, self.s.instructions, None, rnd, "instructions"):
            for cand, truncated in si.parse_instructions(text, finished):
                self.generated["instructions"] += 1
                why = "truncated" if truncated else si.invalid(cand, self.s.filters)
                why = why or self.pool.novel(cand)
                if why:
                    self.dropped["instructions"][why] += 1
                else:
                    self.pool.add(cand, generated=True)
                    kept.append(cand)
        return kept

    def instances(self, rnd: int, instructions: list[str]) -> None:
        """An input, then an output given it, for each new instruction; valid ones become rows."""
        if not instructions:
            return
        f = self.s.filters
        k = self.s.instance_demos
        heads = [si.instance_prompt(self.rng, self.demos, i, k) for i in instructions]
        inputs = self.gen(heads, self.s.instances, "\n", rnd, "inputs")
        tails = [
            f"{h} {ni.flat(x)}".rstrip() + "\nOutput:"
            for h, (x, _) in zip(heads, inputs, strict=True)
        ]
        outputs = self.gen(tails, self.s.instances, "\n", rnd, "outputs")
        for ins, (x, x_done), (y, y_done) in zip(instructions, inputs, outputs, strict=True):
            self.generated["instances"] += 1
            x, y = ni.flat(x), ni.flat(y)
            why = None if x_done and y_done else "truncated"
            why = why or (None if ni.has_words(y) else "empty_output")
            why = why or (
                None if len(x) <= f.max_input_chars and len(y) <= f.max_output_chars else "length"
            )
            if why:
                self.dropped["instances"][why] += 1
            else:
                self.rows.append({"instruction": ins, "input": x, "output": y})

    def counts(self) -> dict[str, Any]:
        """generated = sum(dropped) + kept at each stage (tests/test_self_instruct.py checks)."""
        kept = {"instructions": len(self.pool.generated), "instances": len(self.rows)}
        reasons = {"instructions": si.INSTRUCTION_REASONS, "instances": si.INSTANCE_REASONS}
        out: dict[str, Any] = {"prompts": self.prompts}
        for stage, why in reasons.items():
            out[stage] = {
                "generated": self.generated[stage],
                "dropped": {r: self.dropped[stage][r] for r in why},
                "kept": kept[stage],
            }
        return out


# ----------------------------------------------------------------------------- the pipeline


def generate(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Run the pipeline (or find its dataset already generated) and return the manifest."""
    import torch
    from tqdm.auto import tqdm

    from bench import models

    top, s = check(cfg)
    key = store.dataset_key(top.self_instruct, top.model)
    folder = store.datasets_root() / key
    if not top.force and (folder / store.MANIFEST).exists():
        try:
            manifest = store.read(key)[1]
            print(f"[self_instruct] {key}: already generated in {folder}", flush=True)
            return manifest
        except (OSError, ValueError):  # data missing or changed since: generate again
            pass
    if top.threads:
        torch.set_num_threads(top.threads)
    device = (
        ("cuda" if torch.cuda.is_available() else "cpu") if top.device == "auto" else top.device
    )
    t0 = time.perf_counter()
    seed_names = ni.subtask_split()[0]
    subtasks = [ni.load_subtask(n) for n in seed_names]
    dtype = torch.bfloat16 if s.precision == "bf16" else torch.float32
    model, tok = models.load(top.model, dtype=dtype, device=device)
    model.eval()
    pool = si.Pool(s.filters.rouge_threshold)
    for sub in subtasks:
        pool.add(sub.instruction, generated=False)
    run = Run(
        model=model,
        tok=tok,
        s=s,
        device=device,
        seeds=[t.instruction for t in subtasks],
        demos=si.demo_pool(subtasks, s.max_demo_chars),
        pool=pool,
        rng=random.Random(s.seed),
    )
    bar = tqdm(total=s.n_examples, desc=f"self-instruct {key}", unit="ex", disable=not top.progress)
    rounds = 0
    while len(run.rows) < s.n_examples and rounds < s.max_rounds:
        before = len(run.rows)
        run.instances(rounds, run.instructions(rounds))
        rounds += 1
        bar.update(min(len(run.rows), s.n_examples) - min(before, s.n_examples))
        bar.set_postfix(round=rounds, pool=len(pool.generated), refresh=False)
    bar.close()
    manifest = _write(folder, run, top, key, seed_names, rounds, time.perf_counter() - t0, device)
    c = manifest["counts"]
    print(
        f"[self_instruct] {key}: {c['instances']['kept']} examples from "
        f"{c['instructions']['generated']} candidate instructions in {rounds} rounds -> "
        f"{folder}; train on it with task=self_instruct task.dataset={key}",
        flush=True,
    )
    return manifest


def _write(
    folder: Path,
    run: Run,
    top: PipelineConfig,
    key: str,
    seeds: Sequence[str],
    rounds: int,
    seconds: float,
    device: str,
) -> dict[str, Any]:
    """data.jsonl, then manifest.json, each by temp file + os.replace (the manifest last)."""
    from bench import results

    folder.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in run.rows)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{store.DATA}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / store.DATA)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    code = hashlib.sha256()
    for p in (Path(__file__), Path(store.__file__), Path(ni.__file__)):
        code.update(p.read_bytes())
    manifest = {
        "key": key,
        "version": store.VERSION,
        "created_at": results.now(),
        "generator": {"model": top.model, "settings": top.self_instruct, "device": device},
        "seed_tasks": list(seeds),
        "heldout_tasks": list(ni.subtask_split()[1]),
        "counts": run.counts(),
        # every instruction the filters kept (not only those with a kept instance)
        "diversity": store.diversity(run.pool.generated, run.seeds),
        "rounds": rounds,
        "target_reached": len(run.rows) >= run.s.n_examples,
        "seconds": round(seconds, 1),
        "data": {
            "file": store.DATA,
            "rows": len(run.rows),
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
        },
        "code": {"sha256": code.hexdigest()[:16], **results.environment(device)},
        "source": ni.SOURCE,
        "license": ni.LICENSE,
    }
    results.write_json_atomic(folder / store.MANIFEST, manifest)
    return manifest


def main() -> None:
    import hydra

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the generator loads from the cache only

    @hydra.main(
        version_base="1.3",
        config_path=str(Path(__file__).resolve().parent.parent / "conf"),
        config_name="self_instruct_run",
    )
    def _main(cfg: Any) -> None:
        try:
            generate(cfg)
        except ConfigError as e:
            raise SystemExit(f"[self_instruct] config error: {e}") from None

    _main()


if __name__ == "__main__":
    main()
