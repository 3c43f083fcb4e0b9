"""Sheet grids and tile formats."""
