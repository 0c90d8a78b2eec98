"""DiffAug (paper 001): text- and mask-conditioned latent diffusion inpainting of polyps
into CVC-ClinicDB frames, a single-step latent segmentation gate, and the paper's tables
(notebooks 14-16). :mod:`.study`: the protocol (data, autoencoder, generator, pools,
segmenter grid); :mod:`.prompts`: prompt bank, attribute prompts, sentence embeddings;
:mod:`.generator`: Eq. 7 training and DDIM sampling with guidance; :mod:`.synthesis`:
placement on normal tissue, the gate's IoU; :mod:`.autoencoder`; :mod:`.quality`:
Table 5 and prompt following; :mod:`.analysis`: statistics; :mod:`.bench`: throughput;
:mod:`.figures`; :mod:`.report`; :mod:`.evaluate`: a trained segmenter on any folder pair.
"""
