"""Many installations into one target: the fleet runner (`runner`), a client of `pipelines.api`
and of the CLI in child processes; its command line is `pipelines.face.fleet_cli`."""
