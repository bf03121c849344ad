"""The experiments of the paper: one module per notebook, and the runner they share."""
