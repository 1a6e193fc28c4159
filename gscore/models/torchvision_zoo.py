"""torchvision classification models by name, always randomly initialised (``weights=None``)."""

from __future__ import annotations

import functools
import warnings

from torch import nn


@functools.cache
def torchvision_model_names() -> list[str]:
    """Sorted names of torchvision's classification models (``list_models(module=torchvision.models)``)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def build_torchvision_model(name: str, num_classes: int) -> nn.Module:
    """``get_model(name, weights=None, num_classes=num_classes)``; never downloads anything.

    ReLU modules are switched to ``inplace=False`` (no state_dict effect) so that hooks reading the input of a
    ReLU see the pre-activation; functional in-place calls inside a model's ``forward`` are left as they are.
    """
    import torchvision

    if name not in torchvision_model_names():
        raise ValueError(f"unknown torchvision model {name!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. googlenet/inception_v3 init_weights FutureWarning
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return model
