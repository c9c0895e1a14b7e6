"""The exchange's stages, one module each: check -> prepare -> deliver (and `run`, all three).

Each stage is a function of a `Context` (settings, ledger, secrets, transports, clock) and ends
in `boundary.stage`, the one place that cleans up and audits a failure. The `Gateway` facade
wires the context; the CLI and the DAG tasks call the facade.
"""
