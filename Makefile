# pgwarden: `make demo` shows capture end to end; `make test` runs every suite.
# Both install what is missing first (scripts/setup.sh; root needed on a fresh host).
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-fast bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	@$(PY) -m agent.demo

test: setup
	@$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	@$(PY) -m pytest -m "not bpf and not pg" $(PYTEST_ARGS)

bench: setup
	@$(PY) -m bench.capture_overhead

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
