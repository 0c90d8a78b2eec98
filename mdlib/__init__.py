"""mdlib: the compute core of the MedDiffuseMix study.

Modules
-------
paths     one place for every path (data root, runs, figures)
data      dataset registry, validation, loaders (MedMNIST .npz, image folder + CSV)
models    small CNN and the paper's five timm backbones, with Grad-CAM target layers
train     train / validate / test loop with pluggable augmentation
augment   the augmentation interface (No Aug, Standard Aug, Mixup, ... plug in here)
metrics   classification metrics and calibration
runs      run directories keyed by a config hash; atomic writes; resume
profiles  smoke / cpu / gpu profiles as data
"""

__version__ = "0.1.0"
