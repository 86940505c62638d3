"""LLM in a Flash mechanisms (Alizadeh et al. 2024), vectorised over layers; no per-neuron Python loops.

bits.py         packed neuron sets (64 per uint64 word): pack / unpack, popcounts, sorted flat indices
window.py       SlidingWindow: union of the last k tokens' neurons; load / evict / resident sets (packed)
memmgmt.py      NeuronMatrix: preallocated per-layer matrix, delete = move last row, insert = append
predictor.py    LowRankPredictor: trained low-rank predictor, Quality (precision / recall / FN)
statistical.py  StatisticalPredictor: calibrated to the paper's App. C for projected shapes
masks.py        MaskStream: per-token predicted sets and counts from an activation source (replays its cache)
"""
