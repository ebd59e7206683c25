"""Pure spatial computation: CRS choice, grid topology checks. Imports nothing of ours."""
