# chexplain: `make export` exports the default model with its explanations, builds a TensorRT
# engine where TensorRT and an NVIDIA GPU are present, and explains a sample radiograph;
# `make engine` builds the engine only; `make gpu-check` checks and times engines on a GPU or a
# Jetson; `make test` runs the test suite (installing dcmtk, dicom3tools, OpenSSL, Orthanc and Chromium
# where they are missing); `make lint` checks the code with ruff and the import contracts; `make demo-model`
# retrains the bundled demo model on phantoms (about an hour on two CPU cores); `make demo-study`
# evaluates its explanations on held-out phantoms (docs/evaluation.md, "The study's claim, measured"). All create and reuse
# the virtual environment .venv (on a Jetson: VENV_FLAGS=--system-site-packages, so JetPack's
# TensorRT and PyTorch are seen).

PYTHON ?= python3
VENV ?= .venv
VENV_FLAGS ?=
BIN := $(VENV)/bin
# The PyTorch build to install; override for another platform (e.g. a Jetson's JetPack wheel).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
SAMPLE ?= chexplain/samples/00000001_000.png
MODEL_ONNX ?= artifacts/densenet121-chexpert/model.onnx
# Engine precision: mixed, the classifier and each class's explanation work in FP16, LRP's per-image
# factors in FP32, which keeps every map of the default graph (docs/deployment.md, "Precision plan"; `make
# gpu-check` compares it with FP32 on TensorRT). PRECISION=fp32 builds the FP32 engine.
PRECISION ?= mixed
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
# The bundled demo model: DenseNet121 from scratch on 3000 phantoms (600 more for validation).
DEMO_DIR ?= build/demo
DEMO_PHANTOMS ?= --n 3600 --seed 0 --size 256 --valid-fraction 0.1667
DEMO_TRAINING ?= --image-size 224 --epochs 6 --batch-size 16 --lr 5e-4 --workers 1 --seed 0
# The study of docs/evaluation.md: every CAM variant against every LRP composite on held-out phantoms
# (seed 1; about three hours on two CPU cores), one graph per LRP composite (the exporter's optimiser slows down sharply with
# several backward passes in one graph).
STUDY_COMPOSITES ?= epsilon alpha2beta1 alpha1beta0 epsilon-plus epsilon-plus-flat epsilon-alpha2beta1 \
  epsilon-gamma-box deep-taylor epsilon-bn alpha2beta1-bn epsilon-plus-bn epsilon-alpha2beta1-bn epsilon-plus-flat-bn \
  epsilon-plus-smooth-bn
# The first 30 held-out phantoms with findings, five deletion steps, robustness at the default
# noise levels and draws, the randomisation check on the graphs' own model; AUROC once (it is the
# same classifier in every graph).
STUDY_EVALUATION ?= --limit 30 --steps 5 --randomisation densenet121-chexpert
STUDY_HELD_OUT ?= --n 500 --seed 1 --size 256 --valid-fraction 0

.PHONY: export engine gpu-check test test-fast lint docs system-packages install dev clean check-jetson-wheels check-python310 demo-model demo-study study-gradcam

export: $(VENV)/.installed
	$(BIN)/chexplain export
	$(BIN)/chexplain build-engine $(MODEL_ONNX) --precision $(PRECISION) --if-available
	$(BIN)/chexplain explain $(SAMPLE) --out artifacts/explanations

engine: $(VENV)/.installed
	$(BIN)/chexplain build-engine $(MODEL_ONNX) --precision $(PRECISION)

# On a GPU machine or a Jetson, after `make export`: engines against ONNX Runtime, timed; the
# PyTorch explainer on CUDA where torch sees the GPU (tests/gpu/check.sh). DLA=N adds a DLA engine.
gpu-check:
	PYTHON=$(BIN)/python bash tests/gpu/check.sh $(if $(DLA),--dla $(DLA)) $(if $(ARCHS),--architectures $(ARCHS))

test: $(VENV)/.installed-dev system-packages
	$(BIN)/python -m pytest -q

# The quick lane for a change to one rule or module: everything but the tests marked slow.
test-fast: $(VENV)/.installed-dev system-packages
	$(BIN)/python -m pytest -q -m "not slow"

# ruff, then the import contracts (pyproject.toml [tool.importlinter]: the layers, no torch in the runtime, no circle).
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	LINT_IMPORTS=$(BIN)/lint-imports bash .ci/import-contracts

# The documentation site (docs/ -> build/docs/), links and anchors checked.
docs: $(VENV)/.installed-dev
	$(BIN)/mkdocs build --strict

# dcmtk, dicom3tools, OpenSSL, Orthanc (with DICOMweb) and Chromium for the DICOM node's and the reports' tests (apt-get, where missing).
system-packages:
	bash .ci/system-packages

demo-model: $(VENV)/.installed
	$(BIN)/chexplain phantoms --out $(DEMO_DIR)/phantoms $(DEMO_PHANTOMS) --overwrite
	$(BIN)/chexplain train --data $(DEMO_DIR)/phantoms $(DEMO_TRAINING) --name densenet121-chexpert --out $(DEMO_DIR)/run
	$(BIN)/python -m chexplain.models.demo $(DEMO_DIR)/run/model.pt --training-data \
	  "chexplain phantoms $(DEMO_PHANTOMS) (validation share: Youden thresholds); chexplain train $(DEMO_TRAINING)"

demo-study: $(VENV)/.installed
	$(BIN)/chexplain phantoms --out $(DEMO_DIR)/heldout $(STUDY_HELD_OUT) --overwrite
	$(MAKE) study-gradcam $(addprefix study-lrp-,$(STUDY_COMPOSITES))

# One method's graph exported and evaluated (e.g. `make study-lrp-epsilon-plus` after the phantoms of
# demo-study), so a long study keeps each result as it lands. --parity warn: Zennit's own composites
# are unstable on the trained model, their maps moving with float rounding alone; the study measures
# that instead of refusing the graph (the export report records the parity).
study-gradcam: $(VENV)/.installed
	$(BIN)/chexplain export --explain gradcam --expose-gradients --classes input --name gradcam --out $(DEMO_DIR)/study
	$(BIN)/chexplain evaluate --method all --model $(DEMO_DIR)/study/gradcam --data $(DEMO_DIR)/heldout --csv train.csv \
	  $(STUDY_EVALUATION) --out $(DEMO_DIR)/study/results/gradcam

study-lrp-%: $(VENV)/.installed
	$(BIN)/chexplain export --explain lrp:$* --classes input --parity warn --name lrp-$* --out $(DEMO_DIR)/study
	$(BIN)/chexplain evaluate --model $(DEMO_DIR)/study/lrp-$* --data $(DEMO_DIR)/heldout --csv train.csv --no-auroc \
	  $(STUDY_EVALUATION) --out $(DEMO_DIR)/study/results/lrp-$*

install: $(VENV)/.installed

dev: $(VENV)/.installed-dev

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(PIP) install $(TORCH_SPEC)
	$(PIP) install -e '.[export,cpu,dicom]'
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -e '.[dev]'
	touch $@

# The runtime alone (no torch) on Python 3.10, JetPack 6's: predict and explain on the sample
# with a graph this environment exports (.ci/python310; CI runs it).
check-python310: $(VENV)/.installed
	bash .ci/python310

# Can pip resolve the runtime and build-engine dependencies for a Jetson on JetPack 6 (aarch64,
# CPython 3.10)? Downloads wheels only; installs nothing.
check-jetson-wheels:
	$(PYTHON) -m pip download --quiet --only-binary=:all: --dest $$(mktemp -d) \
	  --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 --python-version 3.10 --implementation cp \
	  "click>=8.1" "numpy>=1.23" "opencv-python-headless>=4.8" "onnxruntime>=1.18" "onnx>=1.16" \
	  "pydicom>=3.0" "pylibjpeg>=2.0" "pylibjpeg-libjpeg>=2.1" "pylibjpeg-openjpeg>=2.3" "cuda-python>=12.3,<13"
	@echo "every runtime dependency has a wheel for aarch64 / CPython 3.10"

clean:
	rm -rf artifacts .pytest_cache build *.egg-info
