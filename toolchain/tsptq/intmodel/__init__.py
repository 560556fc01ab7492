"""The integer model: fixed-point math, kernels, lowering from the simulator, the arena planner."""
