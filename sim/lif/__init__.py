"""LLM in a Flash mechanisms (Alizadeh et al. 2024), vectorised over layers; no per-neuron Python loops.

window.py       SlidingWindow: union of the last k tokens' neurons; load / evict / resident masks
memmgmt.py      NeuronMatrix: preallocated per-layer matrix, delete = move last row, insert = append
predictor.py    LowRankPredictor: trained low-rank predictor, Quality (precision / recall / FN)
statistical.py  StatisticalPredictor: calibrated to the paper's App. C for projected shapes
masks.py        MaskStream: per-token (true, predicted) masks from an activation source
"""
