"""The project's plumbing, apart from the model: errors and exit codes, atomic writes, reading
`--data` files and folders. Imports nothing of ours; reference, fast and harness build on it."""
