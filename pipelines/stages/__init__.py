"""One run's lifecycle (`run.Run`) and the stages it runs: pre-flight, backup, copy, store
steps, sync baseline, the prints worker; and the results they add up to."""
