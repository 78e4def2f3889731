"""xlt-bench core: registries, settings, data, runner, tracking (see README)."""
