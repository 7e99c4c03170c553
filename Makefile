# Quick start: `make demo` then `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export RAY_USAGE_STATS_ENABLED := 0
export MLFLOW_DISABLE_TELEMETRY := true
export PYTHONUNBUFFERED := 1

.PHONY: venv demo test bench bench-quality clean browser serve gpu-check mutate

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# Whole photos the demo's model is scored on after training: Set5 + Set14 where ../shared/data
# is (a development checkout), else the demo's own two validation photos (its shards' val split).
SHARED_VAL := $(wildcard ../shared/data/val/set5 ../shared/data/val/set14)
SCORE_SETS ?= $(if $(SHARED_VAL),$(SHARED_VAL),.raygan/demo_shards_v2)

demo: $(STAMP)
	$(PY) jobs/train_wcdgan.py --config models/configs/wcdgan_cpu_demo.yaml \
	  --summary-json .raygan/demo_summary.json --score-sets $(SCORE_SETS)

# Best effort: the page's browser test needs Chromium (it skips, naming the install, without one).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && echo "installing chromium (apt-get) for the browser test" \
	  && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; } || true

test: $(STAMP) browser
	$(PY) -m pytest -q -rs tests

# The endpoints with the demo's registered generator (`make demo` first); token in .raygan/serve_token.
SERVE_MODEL ?= models:/raygan-wcdgan-jpeg-q10-rgb@champion
serve: $(STAMP)
	@mkdir -p .raygan && { [ -s .raygan/serve_token ] || (umask 077 && $(PY) -c "import secrets; print(secrets.token_urlsafe(24))" > .raygan/serve_token); }
	@echo "bearer token: $(CURDIR)/.raygan/serve_token"
	RAYGAN_SERVE_TOKEN_FILE=$(CURDIR)/.raygan/serve_token $(PY) jobs/serve.py --task jpeg=$(SERVE_MODEL)

bench: $(STAMP)
	$(PY) jobs/bench_train.py

# Gain on whole Set14 photos against training minutes, this demo preset beside the previous (narrow) one
bench-quality: $(STAMP)
	$(PY) jobs/bench_quality.py

# The mutation score of the core modules (not part of make test): docs/mutation.md.
mutate: $(STAMP)
	@$(PY) -c "import mutmut" 2>/dev/null || $(PY) -m pip install -q -c constraints.txt mutmut
	$(PY) tests/mutation/run.py

# On a machine with NVIDIA GPUs (no Ray needed): AMP steps of every paper config, CPU vs GPU
# losses, throughput with/without torch.compile, GPU-hours, NCCL DDP with 2+ GPUs. Exit 1 on any
# failure; without a GPU one line and exit 0 (JSON status "skipped").
gpu-check: $(STAMP)
	$(PY) jobs/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf .raygan build *.egg-info
