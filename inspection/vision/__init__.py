"""Inline vision: frame screening, the inspection model runtime and the inference pipeline."""
