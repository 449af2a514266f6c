"""The model every side shares: column kinds (`kinds`: each kind's types, casts, canonical
texts and checks), components (`components`, `memory`) and the registry listing them
(`registry`), with the value forms they rest on (`canonical`, `memory_values`,
`json_numbers`, `checks`)."""
