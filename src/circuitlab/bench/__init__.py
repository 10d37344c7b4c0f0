"""The benchmark layer (``circuitlab bench``): sparse against dense circuits at matched pretraining loss.

Modules: ``spec`` (the TOML spec and its checks), ``plan`` (models and cells of a spec), ``work`` and
``cell`` (what a Dask worker runs), ``runner`` (the client: Dask, resume, stores, the results table),
``table`` (results.csv), ``estimate`` (``--dry-run``), ``analysis`` (matched-loss ratios, controls,
seed spread), ``report`` (figures and report.md) and ``mib`` (export in MIB's submission layout).
Above ``circuitlab.jobs``, below ``circuitlab.cli``; torch and dask are imported inside functions.
"""
