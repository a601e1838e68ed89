"""The machine: CUDA/ROCm/CPU detection, the memory planner and presets, accelerate configs and launching."""
