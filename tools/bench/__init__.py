"""Benchmarks and fuzzers, each owning its pass/fail targets."""
