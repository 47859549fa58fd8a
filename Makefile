# The two commands of the README: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
EXTRAS ?= device,cloud,train,dev
MODEL  ?= models/digits.pt
PAPER_MODEL ?= models/digits-paper.pt
STAMP  := $(VENV)/.installed-$(shell printf '%s' "$(EXTRAS)" | tr ',' '-')

.PHONY: help install mosquitto test test-slow lint demo model paper-model bench bench-pipeline bench-reliability bench-footprint bench-testbed pi-wheels results examples clean

help:
	@echo "make demo      set up, then broker + cloud worker + 3 camera nodes live on this machine"
	@echo "make test      set up, lint, run the default test suite"
	@echo "make test-slow the long checks (marker 'slow')"
	@echo "make bench     edge compute, bytes, codec, bandit, end to end -> docs/benchmarks.md"
	@echo "make bench-pipeline  1, 4 and 8 nodes + 1 worker end to end on a private Mosquitto"
	@echo "make results   regenerate docs/results.md from the digits checkpoint"
	@echo "make bench-reliability  every failure scenario + the 60 s load run -> docs/reliability.md"
	@echo "make bench-footprint  memory, start-up and disk of node and worker, torch vs artefact"
	@echo "make bench-testbed  Pi-class nodes behind shaped links, every strategy -> docs/testbed.md"
	@echo "make pi-wheels  check every [device] dependency has an aarch64 wheel (needs the index)"
	@echo "make install   virtualenv in $(VENV) with extras [$(EXTRAS)], plus Mosquitto"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "isplitee needs Python >= 3.11; set PYTHON=python3.11 (or newer)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-compile --upgrade pip
	$(PY) -m pip install --quiet --no-compile -e '.[$(EXTRAS)]'
	@# pip byte-compiles the 11,000 modules of the dependencies one at a time; compileall does
	@# it on every core. Some packages ship Python 2 test files: pip skips them silently, so
	@# does this.
	$(PY) -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	@touch $@

install: $(STAMP) mosquitto

mosquitto:
	@bash deploy/ensure-mosquitto.sh

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# -n auto: one pytest-xdist worker per core; loadscope keeps a module's tests (and the model or
# broker its fixtures start) on one worker.
test: install lint
	$(PY) -m pytest -n auto --dist loadscope

test-slow: install
	$(PY) -m pytest -n auto --dist loadscope -m slow

# The bundled digits model: trained with distortion augmentation (our remedy for over-confident
# early exits; the recipe is shared.lab.demo.DIGITS_RECIPE); the paper-recipe model (clean images
# only) is kept for comparison.
$(MODEL): | $(STAMP)
	$(VENV)/bin/isplitee demo --train-only --model $(MODEL)

$(PAPER_MODEL): | $(STAMP)
	$(VENV)/bin/isplitee train --dataset digits --input-size 32 --epochs 30 --seed 0 \
	  --augment 0 --calibrate-on clean --out $(PAPER_MODEL)

model: $(MODEL)
paper-model: $(PAPER_MODEL)

demo: install
	$(VENV)/bin/isplitee demo --model $(MODEL) --json runs/demo/summary.json

bench: install $(MODEL)
	$(PY) bench/bench_perf.py --model $(MODEL) --out docs/benchmarks.md
	$(PY) bench/bench_footprint.py --model $(MODEL) --out docs/benchmarks.md

bench-footprint: install $(MODEL)
	$(PY) bench/bench_footprint.py --model $(MODEL) --out docs/benchmarks.md

# Trains its 224 px model once (about 15 minutes here, cached in .cache/testbed/); needs root
# for the cgroup CPU budget.
bench-testbed: install
	$(PY) bench/bench_testbed.py --out docs/testbed.md --readme README.md --day

pi-wheels: $(STAMP)
	$(PY) bench/bench_footprint.py --pi-wheels --out docs/benchmarks.md

bench-pipeline: install $(MODEL)
	$(PY) bench/bench_pipeline.py --model $(MODEL) --json runs/bench/pipeline.json

bench-reliability: install $(MODEL)
	$(PY) bench/reliability.py --model $(MODEL)

examples: $(STAMP)
	$(PY) deploy/examples.py

results: $(STAMP) $(MODEL) $(PAPER_MODEL)
	$(PY) bench/make_results.py --model $(MODEL) --paper-model $(PAPER_MODEL) --out docs/results.md

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache *.egg-info
