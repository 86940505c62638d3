"""The real side: measure the machine this runs on, run sparse inference for real, compare with the simulator.

odirect.py    DirectReader: O_DIRECT reads of byte extents at a queue depth (threads), aligned requests
calibrate.py  microbenchmarks of this machine -> a hardware profile (python -m sim calibrate)
weights.py    what the real run holds in DRAM: resident ops, FFN rows, the window's matrices, within a budget
executor.py   runs a policy's step graphs for real: reads from a flash image, copies, numpy kernels
compare.py    simulated vs measured per token and per component (python -m sim execute)
"""
