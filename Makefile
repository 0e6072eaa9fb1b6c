# chexplain: `make export` exports the default model with its explanations and explains a
# sample radiograph;
# `make test` runs the test suite. Both create and reuse the virtual environment .venv.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The PyTorch build to install; override for another platform (e.g. a Jetson's JetPack wheel).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
SAMPLE ?= chexplain/samples/00000001_000.png
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: export test install dev clean

export: $(VENV)/.installed
	$(BIN)/chexplain export
	$(BIN)/chexplain explain $(SAMPLE) --out artifacts/explanations

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q

install: $(VENV)/.installed

dev: $(VENV)/.installed-dev

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install $(TORCH_SPEC)
	$(PIP) install -e '.[export,cpu,dicom]'
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -e '.[dev]'
	touch $@

clean:
	rm -rf artifacts .pytest_cache build *.egg-info
