"""The benchmarks' metrics."""
