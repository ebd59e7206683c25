"""The surfaces: the FastAPI app, the CLI, settings. Thin: parse, call layers, render."""
