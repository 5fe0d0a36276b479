# ft-bench: comparative benchmark of fine-tuning methods. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PY            ?= .venv/bin/python
SWEEP         ?= default
LOGGER        ?= offline   # the report is logged to W&B as an artifact: offline | online | none
TORCH_VERSION ?= 2.13.0
# Where torch comes from. Empty: CPU wheel (+cpu) when no NVIDIA GPU is visible, PyPI's CUDA
# wheel otherwise. Set e.g. TORCH_INDEX=https://download.pytorch.org/whl/cu128 to choose.
TORCH_INDEX   ?=
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

KILLS         ?= 5          # make drill: kill -9s before the final resume
DRILL_ARGS    ?=            # e.g. --results-dir /tmp/drill eval=off

STAMP := .venv/.installed

.PHONY: help setup test test-all lint format models sweep studies report decode bench drill clean-cache

help: ## this list
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv .venv
	@$(PY) -m pip install -q --upgrade pip
	@if $(PY) -c "import torch" 2>/dev/null; then echo "[setup] torch present: $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	elif [ -n "$(TORCH_INDEX)" ]; then $(PY) -m pip install -q "torch==$(TORCH_VERSION)" --index-url "$(TORCH_INDEX)"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then $(PY) -m pip install -q "torch==$(TORCH_VERSION)"; \
	else $(PY) -m pip install -q "torch==$(TORCH_VERSION)+cpu" 2>/dev/null || $(PY) -m pip install -q "torch==$(TORCH_VERSION)" 2>/dev/null \
	  || $(PY) -m pip install -q "torch==$(TORCH_VERSION)+cpu" --index-url https://download.pytorch.org/whl/cpu; fi
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP) ## create .venv (torch first), install the project, fetch offline assets (idempotent)
	$(PY) -m bench.assets
	$(PY) -m bench.models conf/model/smollm2-135m.yaml

test: setup ## unit + integration tests (offline, CPU; sets itself up; <10 min on 2 cores)
	@bash tests/setup_chromium.sh
	$(PY) -m pytest -q

test-all: setup ## every test tier, slow ones (real models, long sweeps) included
	@bash tests/setup_chromium.sh
	$(PY) -m pytest -q -m "unit or integration or slow"

lint: $(STAMP) ## ruff check + format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP) ## apply ruff formatting
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

models: setup ## pretrain the small model ladder (cached by config hash)
	$(PY) -m bench.ladder

sweep: setup ## prepare only the sweep's models, run its phases (SWEEP=default|smoke|paper), write its report
	$(PY) -m bench.sweep prepare $(SWEEP)
	@# the report is written even when a cell failed; the sweep's exit status is kept
	status=0; $(PY) -m bench.sweep run $(SWEEP) || status=$$?; \
	$(PY) -m bench.report --sweep $(SWEEP) --logger $(strip $(LOGGER)) && exit $$status

# issue 15's settings studies, in the order they answer the survey's claims (each <= 90 min)
STUDIES ?= study_lora study_lora_rank study_qlora study_prompts_prefix study_prompts \
  study_prompts_ptuning_v1 study_freeze

studies: setup ## run the settings studies one after another (STUDIES=...), each resuming and reporting
	@status=0; for s in $(STUDIES); do $(MAKE) --no-print-directory sweep SWEEP=$$s || status=1; done; exit $$status

report: $(STAMP) ## write reports/$(SWEEP)/ from results/$(SWEEP)/
	$(PY) -m bench.report --sweep $(SWEEP)

# issue 16's decoding fixes: name and transformers generate options of each setting
DECODINGS := greedy: \
  penalty:eval.decoding.repetition_penalty=1.2 \
  ngram3:eval.decoding.no_repeat_ngram_size=3 \
  sample:eval.decoding.do_sample=true,eval.decoding.temperature=0.7,eval.decoding.top_p=0.9,eval.decoding.num_samples=5

decode: setup ## re-evaluate $(SWEEP)'s runs (kept states) under each decoding into results/$(SWEEP)_decoding/, report it
	@for d in $(DECODINGS); do name=$${d%%:*}; opts=$${d#*:}; \
	  args="--override eval.decoding.name=$$name"; for o in $${opts//,/ }; do args="$$args --override $$o"; done; \
	  $(PY) -m bench.evaluate --sweep $(SWEEP) --into $(SWEEP)_decoding --jobs 2 --threads 1 $$args || exit 1; done
	$(PY) -m bench.report --sweep $(SWEEP)_decoding

bench: setup ## throughput: harness vs a bare peft+torch loop, and MFU
	$(PY) -m bench.speed

drill: setup ## kill -9 the smoke sweep KILLS times at random moments, resume, count valid records
	$(PY) -m bench.drill --kills $(KILLS) $(DRILL_ARGS)

clean-cache: ## remove the asset/model cache ($$BENCH_CACHE or ~/.cache/ft-bench)
	rm -rf "$${BENCH_CACHE:-$$HOME/.cache/ft-bench}"
