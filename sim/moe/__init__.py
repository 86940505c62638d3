"""Mixture-of-experts offloading: expert routing for shapes no real model here can route (:mod:`sim.moe.routing`);
the policy that times experts as units of loading is sim/policies/moe_offload.py."""
