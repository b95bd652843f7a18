"""Where the computation runs: the device, what the CPU/GPU computes natively, the process group, measured kernels."""
