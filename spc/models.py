"""Models of the spc app (added by the issues that build it)."""
