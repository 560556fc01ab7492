"""The integer model: fixed-point math, kernels, lowering from the simulator, the arena planner, the float64
simulator with the file's rounding (faithful)."""
