"""Maps out: which of a graph's explanations to render, the CAM formulas, and the one
pipeline from graph output to the original pixel grid to colour (overlays, sheets)."""
