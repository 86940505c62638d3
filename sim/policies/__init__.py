"""Policies decide, per token, what is resident, what is read from flash and what is computed.

Each policy module defines a config class (a StrictModel with a ``name: Literal[...]`` discriminator) and
a policy class registered in :mod:`sim.policies.registry`.
"""
