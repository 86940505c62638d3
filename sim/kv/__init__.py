"""The KV cache's policies: which cached keys each query reads (:mod:`sim.kv.selection`), MagicPIG's SimHash
(:mod:`sim.kv.lsh`). Pure numpy over one layer's q and k; the numpy backend (:mod:`sim.lab.kv_accuracy`) measures
what they cost in accuracy, the simulator charges the keys they touch."""
