"""The deterministic demo-town generator."""
