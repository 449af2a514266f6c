"""Many installations into one target: the fleet runner (a client of `pipelines.api` and of
the CLI in child processes) and its command line."""
