"""Activation traces of a real model, sparsity rules and statistics on them, and the activation sources
(real, projected onto a bigger model, statistically generated) that drive the simulator. Traces are made by the
model lab (:mod:`sim.lab.capture`).

  format.py      trace archive format v1: TraceWriter / TraceReader (chunked, compressed, versioned)
  encoding.py    per-field storage encodings and their documented error
  sparsity.py    threshold (CATS/TEAL), top-k and gate<0 rules -> boolean masks
  stats.py       density, neuron use vs window, cross-layer overlap, hot-weight reuse
  source.py      ActivationSource protocol + TraceSource (a real trace with a sparsity rule)
  projection.py  a real trace projected onto a bigger model profile (e.g. OPT-6.7B)
  synthetic.py   a statistical generator fitted on real traces
"""
