"""U-Net models: backbone registry, build_unet, losses, metrics, post-processing, training.

Importing the package imports nothing (no Keras). Saved models that hold the project's
own layers (a ResNet encoder's preprocessing, an ensemble) load with
`keras.models.load_model(path, safe_mode=True)` after `import nuclei_search.models.layers`,
which registers them; `nuclei_search.models.unet.load_unet` does that itself.
"""
