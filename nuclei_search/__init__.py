"""nuclei-search: distributed hyperparameter search for U-Net nucleus segmentation."""

__version__ = "0.1.0"
