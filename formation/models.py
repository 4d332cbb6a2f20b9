"""Models of the formation app (added by the issues that build it)."""
