"""LLM in a Flash on the real model (SmolLM2 via the numpy backend): what the predictor's false negatives cost.

train.py     capture mlp_in and |ffn_act| from the model on corpus text, label, train and save a predictor
selector.py  "pre"-mode FFN selector computing the policy's set per layer and position (predicted, window
             union of the last k positions, oracle or dense), with counts of neurons computed and missed
accuracy.py  ``kind: lif_accuracy`` experiments: perplexity / greedy agreement on held-out text per point
speed.py     the same points simulated on hardware profiles with the real SmolLM2 trace (ms/token, flash)
"""
