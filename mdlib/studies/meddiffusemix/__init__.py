"""MedDiffuseMix study (paper 000; notebooks 01-11). :mod:`.study`: the protocol (methods,
equal-budget parameters, smoke configurations, sweep hooks); :mod:`.preserve`: the
saliency-preservation table; :mod:`.analysis`: numbers from trained classifiers (run
selection, Grad-CAM statistics, t-SNE); :mod:`.figures`; :mod:`.report`: README sections.
The method itself is core: :mod:`mdlib.augment.meddiffusemix`."""
