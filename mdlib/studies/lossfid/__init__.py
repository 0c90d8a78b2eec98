"""L2 vs Huber diffusion loss and Fréchet distance (paper 004; notebook 13). :mod:`.study`:
generators per loss and seed, Fréchet distances, held-out denoising error;
:mod:`.figures`; :mod:`.report`."""
