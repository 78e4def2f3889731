"""xlt-bench core: registries, settings, data, runner, tracking (see README)."""

import os

# MLflow 3 reports usage to its telemetry server from every process that logs; a harness that
# promises no network at run time turns that off unless the user has chosen otherwise.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
