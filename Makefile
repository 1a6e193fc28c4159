# `make run`: the API and one worker on 127.0.0.1:8000 (embedded SQLite mode).
# `make test`: the test suite (two processes); `make test-chaos`: the fault-injection scenarios.
# Both create .venv and install on first use.
# CPU-only PyTorch (no CUDA libraries, a much smaller .venv): make run TORCH_INDEX=https://download.pytorch.org/whl/cpu
PYTHON ?= python3
VENV ?= .venv
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
TORCH_INDEX ?=
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test test-chaos lint bench bench-service demo clean

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(TORCH_PINS)
	$(VENV)/bin/pip install -q -e ".[dev,postgres]" --config-settings editable_mode=compat
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/gscore up --host $(HOST) --port $(PORT)

# files whole in two processes, in collection order: tests/conftest.py puts the slowest files first
test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

# the fault-injection scenarios against real API/worker processes (tests/stack/test_chaos.py; CI runs them too)
test-chaos: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q -m "chaos and not slow"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

demo: $(VENV)/.installed
	$(VENV)/bin/gscore demo

bench: $(VENV)/.installed
	$(VENV)/bin/python benchmarks/bench_measures.py
	$(VENV)/bin/python benchmarks/bench_sharpness.py --samples 200 --draws 10 --steps 2

clean:
	rm -rf $(VENV) gscore-data .pytest_cache

bench-service: $(VENV)/.installed
	$(VENV)/bin/python benchmarks/bench_service.py
