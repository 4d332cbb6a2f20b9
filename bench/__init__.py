"""Benchmarks (not tests): each builds its own data and prints JSON with its figures."""
