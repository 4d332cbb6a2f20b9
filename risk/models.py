"""Models of the risk app (added by the issues that build it)."""
