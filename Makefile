# Two commands on a fresh machine (Python 3.11):  `make run`  and  `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
export KEDRO_DISABLE_TELEMETRY := 1
export TF_CPP_MIN_LOG_LEVEL := 2
# The venv's bin first on PATH: `kedro mlflow ui` starts `mlflow` from PATH (a fresh clone has no other).
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup browser java run test viz mlflow-ui serve

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[test]"
	touch $@

# Headless Chromium for the kedro-viz browser check (Debian package; needs root, as on CI).
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
	  && (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium) \
	  || echo "chromium not installed: the kedro-viz browser test will be skipped (it fails under CI=true)"; }

# Java 17 for Spark (batch_scoring pipeline and its test; Debian package, needs root, as on CI).
java:
	@command -v java >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
	  && (apt-get update -qq && apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless) \
	  || echo "java not installed: the Spark batch-scoring test will be skipped"; }

run: setup            ## set up, then `kedro run` (all six models on the shipped real boards, then the report)
	$(BIN)/kedro run $(ARGS)

test: setup browser java   ## set up, then the whole test suite
	$(BIN)/python -m pytest $(ARGS)

viz: setup            ## pipeline lineage in the browser (http://127.0.0.1:4141)
	$(BIN)/kedro viz run

mlflow-ui: setup      ## compare runs (http://127.0.0.1:5000): prints the link to the model runs, then serves
	$(BIN)/python -m wood_anomaly.mlflow_ui
	$(BIN)/kedro mlflow ui $(ARGS)

# REST scoring of a registered model (`kedro run --pipeline=<model>` registers wood-anomaly-<model>):
#   make serve MODEL=patchcore   ->  POST http://127.0.0.1:5055/invocations (README: "Serving over REST")
MODEL ?= patchcore
PORT  ?= 5055
serve: setup          ## serve models:/wood-anomaly-$(MODEL)/latest with the project's environment (nothing installed)
	MLFLOW_TRACKING_URI="$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}" \
	  $(BIN)/mlflow models serve -m "models:/wood-anomaly-$(MODEL)/latest" --env-manager local -h 127.0.0.1 -p $(PORT)
