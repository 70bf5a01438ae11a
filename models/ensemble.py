"""One Keras model that averages the probability maps of several U-Nets.

``build_ensemble(members, weights)`` wires: ``image`` → for each member: pad to the
member's own stride (``PadToMultiple``) → the member U-Net (a nested model named
``member_<i>``) → crop back to the input size and to the ensemble's channels
(``CropToReference``) → ``WeightedMean``. Members may differ in depth, stride and
backbone; the ensemble takes any H and W (stride 1). Its channels are the nucleus
probability, plus the contour channel when every member has one. Only registered
layers: it saves to ``.keras`` and loads with ``safe_mode=True``, and exports as a
SavedModel like a single U-Net.
"""

from __future__ import annotations

from typing import Sequence

import keras

from nuclei_search.models.layers import CropToReference, PadToMultiple, WeightedMean

ENSEMBLE_NAME = "ensemble"


def ensemble_channels(member_channels: Sequence[int]) -> int:
    """Output channels of an ensemble: 2 (nucleus, contour) only when every member has both."""
    return 2 if member_channels and min(member_channels) >= 2 else 1


def build_ensemble(members: Sequence[keras.Model], strides: Sequence[int], weights: Sequence[float],
                   name: str = ENSEMBLE_NAME) -> keras.Model:
    """A model whose output is the weighted mean of the members' outputs (see module doc)."""
    if not members or not (len(members) == len(strides) == len(weights)):
        raise ValueError("an ensemble needs one stride and one weight per member, and at least one member")
    channels = ensemble_channels([int(m.output_shape[-1]) for m in members])
    image = keras.Input(shape=(None, None, 3), name="image")
    outputs = []
    for k, (member, stride) in enumerate(zip(members, strides)):
        member.name = f"member_{k}"  # nested models need distinct names in one graph
        padded = PadToMultiple(int(stride), name=f"member_{k}_pad")(image)
        out = member(padded)
        outputs.append(CropToReference(channels, name=f"member_{k}_crop")([out, image]))
    mean = WeightedMean(list(weights), name="mask")(outputs) if len(outputs) > 1 else outputs[0]
    return keras.Model(image, mean, name=name)
