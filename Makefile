# The README's two commands: `make demo` (main job) and `make test`.
# Both create .venv, install the project and start the local database if needed.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: demo test install db clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch from this machine's disk; never a multi-GB CUDA build on a CPU box.
	$(BIN)/python -m pip install -q "torch==2.13.0" || $(BIN)/python -m pip install -q "torch>=2.3,<2.15"
	# neuralpredictors: the interop tests run in CI (tests/test_neuralpredictors.py).
	$(BIN)/python -m pip install -q -e ".[test,neuralpredictors]"
	touch $(STAMP)

install: $(STAMP)

db: $(STAMP)
	$(BIN)/v1twin db start

demo: db
	$(BIN)/v1twin demo

test: db
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -ra

clean:
	-$(BIN)/v1twin db stop
	rm -rf $(VENV) .v1twin
