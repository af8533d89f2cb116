"""LaborNet benchmarks (`make bench`); numbers, never pass/fail assertions."""
