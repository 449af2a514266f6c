"""What every layer of a run shares: the plan (its model and where it may be written) and
the progress event model with its default line printer."""
