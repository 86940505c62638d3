"""Model shapes and the byte arithmetic of their weights (no weights here: see sim.lab.kernels)."""
