"""Discrete-event simulator (SimPy) of storage and memory hierarchies for sparse LLM inference.

Inside the package every quantity is an SI float whose name carries its unit (``latency_s``,
``capacity_bytes``, ``bandwidth_Bps``, ``peak_flops``). Unit strings live only in YAML and are parsed
by :mod:`sim.units`.
"""

__version__ = "0.1.0"
