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
	@echo "make demo       set up .venv, then the main job: generate the synthetic dataset, train the tiny"
	@echo "                Mask2Former on it (CPU), evaluate PQ / mask AP / mIoU, write demo overlays"
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

# The main job: Mask2Former end to end on the bundled synthetic data, on CPU (a few minutes).
# DETECTRON2_DATASETS defaults to ./datasets; output/ holds the run and the overlays.
DATASETS_ROOT ?= $(or $(DETECTRON2_DATASETS),datasets)
DEMO_CONFIG := configs/synthetic/maskformer2_R18_tiny_panoptic.yaml
demo: setup
	$(PY) tools/make_synthetic_dataset.py --root $(DATASETS_ROOT)
	DETECTRON2_DATASETS=$(DATASETS_ROOT) $(PY) train_net.py --config-file $(DEMO_CONFIG) \
		OUTPUT_DIR output/demo/panoptic
	DETECTRON2_DATASETS=$(DATASETS_ROOT) $(PY) demo/demo.py --config-file $(DEMO_CONFIG) \
		--input $(DATASETS_ROOT)/seg_zoo_synthetic/images/val --output output/demo/overlays \
		--opts MODEL.WEIGHTS output/demo/panoptic/model_final.pth

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
