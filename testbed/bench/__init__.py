"""`make bench`: our scoring step against three baselines, on the real broker and service.

Modules: `scenarios` (what runs), `clients` (the baseline PTransforms),
`run_client` (one pipeline process per client), `sampler` (1 s samples),
`metrics` (pure figures from samples), `plots`, `report`, `orchestrate`
(`python -m testbed.bench`).
"""
