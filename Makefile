PY := .venv/bin/python
BENCH := tests/benchmarks

.PHONY: setup test quickstart bench bench-quality
setup:
	./scripts/setup.sh

test: setup
	$(PY) -m pytest -q

quickstart: setup
	./scripts/quickstart.sh

# Performance benchmarks (tens of minutes, both cores): results in tests/benchmarks/results/*.md|json
bench: setup
	$(PY) $(BENCH)/bench_generate.py
	$(PY) $(BENCH)/bench_features.py
	$(PY) $(BENCH)/bench_rules.py
	$(PY) $(BENCH)/bench_detectors.py
	$(PY) $(BENCH)/bench_graph.py
	$(PY) $(BENCH)/bench_scoring.py

# Detection-quality reports: rule engine per typology, graph detectors on FRAUDAR-style graphs,
# ring recovery on the generator's collusion rings
bench-quality: setup
	$(PY) $(BENCH)/rules_quality.py
	$(PY) $(BENCH)/graph_generic.py
	$(PY) $(BENCH)/ring_recovery.py --seeds 0 1 2
