# seg_zoo's entry points. demo/test/bench first create or refresh .venv (tools/setup_env.sh:
# seconds when nothing changed), then run inside it.
#
# A failing command makes `make` exit with status 2 and print the command's own status
# ("Error 5" when pytest collected no tests).

SHELL := /bin/bash
PY := .venv/bin/python
SETUP := bash tools/setup_env.sh

.DEFAULT_GOAL := help
.PHONY: help setup demo test test-gpu bench lint format clean distclean

help:
	@echo "make demo       set up .venv, then the main job (for now: the ms_deform_attn op benchmark, quick, CPU)"
	@echo "make test       set up .venv, then the tests (pytest -q tests)"
	@echo "make test-gpu   set up .venv, then the tests that need a CUDA GPU (pytest -m cuda)"
	@echo "make bench      set up .venv, then every benchmark in benchmarks/ on its default settings"
	@echo "make lint       ruff check + ruff format --check"
	@echo "make format     ruff format + ruff check --fix"
	@echo "make setup      only create/refresh .venv and build seg_zoo._C"
	@echo "make clean      remove build outputs (keeps .venv and .cache)"
	@echo "make distclean  clean, and remove .venv and .cache too"

setup:
	@$(SETUP)

# The main job. Until Mask2Former lands, it is the op benchmark on CPU.
demo: setup
	$(PY) benchmarks/ms_deform_attn.py --device cpu --quick

test: setup
	$(PY) -m pytest -q tests

test-gpu: setup
	$(PY) -m pytest -q -m cuda tests

# Every benchmarks/*.py except helpers whose name starts with "_"; stops at the first failure.
bench: setup
	@set -e; for f in benchmarks/*.py; do \
		case "$$(basename "$$f")" in _*) continue ;; esac; \
		echo "== $$f"; \
		$(PY) "$$f"; \
	done

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf build *.egg-info seg_zoo/_C*.so .pytest_cache .ruff_cache output
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf .venv .cache
