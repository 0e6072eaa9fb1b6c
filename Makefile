# chexplain: `make export` exports the default model with its explanations, builds a TensorRT
# engine where TensorRT and an NVIDIA GPU are present, and explains a sample radiograph;
# `make engine` builds the engine only; `make test` runs the test suite. All create and reuse
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
# Engine precision: mixed keeps the classifier in FP16 and the explanations in FP32.
PRECISION ?= mixed
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: export engine test install dev clean check-jetson-wheels

export: $(VENV)/.installed
	$(BIN)/chexplain export
	$(BIN)/chexplain build-engine $(MODEL_ONNX) --precision $(PRECISION) --if-available
	$(BIN)/chexplain explain $(SAMPLE) --out artifacts/explanations

engine: $(VENV)/.installed
	$(BIN)/chexplain build-engine $(MODEL_ONNX) --precision $(PRECISION)

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q

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
