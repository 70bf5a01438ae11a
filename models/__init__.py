"""U-Net models: backbone registry, build_unet, losses, metrics, post-processing, training.

Importing the package registers the project's serialisable Keras objects, so
`keras.models.load_model(path, safe_mode=True)` can load saved models after `import models`.
"""

from models import layers, losses, metrics  # noqa: F401  (registers custom Keras objects)
