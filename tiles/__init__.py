"""Tile matrix sets, vector and raster tiles (see DESIGN.md). Imports layers/ and gis/."""
