PY := .venv/bin/python

.PHONY: setup test quickstart bench
setup:
	./scripts/setup.sh

test: setup
	$(PY) -m pytest -q

quickstart: setup
	./scripts/quickstart.sh

bench: setup
	$(PY) -m pytest -q tests/benchmarks -p no:cacheprovider -o addopts="" -s
