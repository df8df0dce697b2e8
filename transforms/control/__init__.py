"""Pure-Python throttling control logic (no Beam imports; injected clocks)."""
