"""LLM in a Flash mechanisms (Alizadeh et al. 2024): sliding-window neuron cache, neuron memory management
and the low-rank activation predictor. All vectorised over layers; no per-neuron Python loops."""
