"""ActiveFlow (Jia, Cao et al., arXiv 2504.08378): statistics of active input channels measured on real traces
(:mod:`sim.activeflow.stats`) and the §4.1 cost model with its greedy search (:mod:`sim.activeflow.cost`); the
policy that times it is sim/policies/activeflow.py."""
