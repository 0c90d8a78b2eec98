"""Training on generated images (paper 002; notebook 12). :mod:`.study`: synthetic pools,
the real / synthetic / real + synthetic regimes at an equal step budget, the grid,
Grad-CAM and LIME explanations; :mod:`.figures`; :mod:`.report`."""
