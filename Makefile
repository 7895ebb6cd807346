PY ?= .venv/bin/python

.PHONY: setup test quickstart bench
setup:
	./scripts/setup.sh

test:
	$(PY) -m pytest -q

bench:
	$(PY) -m pytest -q tests/benchmarks -p no:cacheprovider -o addopts="" -s
