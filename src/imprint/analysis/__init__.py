"""Pure analyses of masks and weights (no run folders, no plotting)."""
