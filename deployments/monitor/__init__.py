"""The GPU monitor node: NVML telemetry, a clean no-op without a GPU."""
