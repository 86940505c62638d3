"""The decode engine: turns a policy's per-token plans into SimPy processes on the devices."""
