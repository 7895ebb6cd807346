#!/usr/bin/env bash
# The main job on the small embedded default, end to end:
# generate -> validate -> experiment (tracked in MLflow) -> export -> score.
set -euo pipefail
cd "$(dirname "$0")/.."
mf=.venv/bin/medfraud
data=data/small-seed7                      # where experiments/quickstart.yaml looks for its dataset

if [ ! -f "$data/manifest.json" ]; then
  $mf generate --preset small --seed 7 --out "$data"
fi
$mf validate "$data"
$mf run experiments/quickstart.yaml                       # -> sqlite:///mlflow.db, experiment "quickstart"
$mf export --experiment quickstart --name medfraud_quickstart --overwrite   # -> models/medfraud_quickstart, alias champion
mkdir -p runs
$mf extract "$data" --out runs/claims_to_score.parquet --limit 20000       # the latest 20k claims with their lines
$mf score --model models:/medfraud_quickstart@champion \
  --input runs/claims_to_score.parquet --output runs/scores.parquet
.venv/bin/python - <<'PY'
import polars as pl
scores = pl.read_parquet("runs/scores.parquet")
print(scores["band"].value_counts().sort("band"))
print(scores.sort("risk", descending=True).head(5))
PY
echo "Compare runs: $mf compare --experiment quickstart | MLflow UI: .venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db"
