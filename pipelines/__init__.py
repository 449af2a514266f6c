"""llmspell-migrate's pipelines, in layers that import downward only: the entry points here
(the CLI `python -m pipelines.migrate`, the Python API `pipelines.api`, `dagster_defs`, `demo`),
then `face` (what is printed), `fleet`, `workflows`, `stages` (one run and its stages) and
`shared` (the plan and the progress event model)."""
