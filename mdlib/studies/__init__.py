"""Each paper's study, on top of the core: its protocol, analysis, figures and README
section, one package per study.

* :mod:`.meddiffusemix`: paper 000, saliency-guided diffusion mixing augmentation against
  six baselines (notebooks 01-11);
* :mod:`.synthetic`: paper 002, classifiers trained on generated images (notebook 12);
* :mod:`.lossfid`: paper 004, L2 vs Huber diffusion loss and Fréchet distance (notebook 13);
* :mod:`.diffaug`: paper 001, DiffAug: gated synthetic polyps for segmentation (notebooks 14-16).
* :mod:`.diffmic`: paper 003, DiffMIC-v2, a diffusion classifier (the label denoised,
  conditioned on the image) against its own plain backbone (notebooks 17-18).

A study imports the core (and may reuse another study's public functions); the core never
imports a study. ``python -m mdlib.studies.report`` rewrites README.md's results.
"""
