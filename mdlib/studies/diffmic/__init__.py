"""DiffMIC-v2 (paper 003; notebooks 17-18): the label is denoised, conditioned on the
image. :mod:`.model`: the DCG model (global saliency prior, greedy top-K ROI windows, local
encoder with gated attention), the dense guidance map, the image feature prior and the
heterologous diffusion with DDIM inference; :mod:`.train`: the two training stages
(DCG pre-training, diffusion training), selection on validation, test once;
:mod:`.study`: the protocol (Table II, the C1-C6 ablation, sensitivity), runs and
statistics; :mod:`.bench`: Table VI; :mod:`.figures`; :mod:`.report`."""
