"""Models of the inspection app (added by the issues that build it)."""
