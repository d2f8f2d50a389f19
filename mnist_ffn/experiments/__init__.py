"""Many runs of the same training: `compare` (one per activation) and sweeps on Optuna, each run trained once, kept or
resumed."""
