"""timm models by name (optional extra ``pip install 'gscore[timm]'``), always randomly initialised.

``timm.create_model(name, pretrained=False, num_classes=N, in_chans=C)``: ``pretrained=False`` means no
weights are looked up or downloaded; the checkpoint supplies them. Models whose activations are not
ReLU-type (GELU in ViTs and ConvNeXts, SiLU in EfficientNets) make ``gscore.inputs.extraction`` raise its
"calls no ReLU-type activation" MeasureError, so c1-c4 are undefined for them; the other measures run.
"""

from __future__ import annotations

import functools
import warnings

from torch import nn

from gscore.errors import SpecError

TIMM_INSTALL_HINT = "timm models need the optional package timm: pip install 'gscore[timm]'"


def timm_available() -> bool:
    """Whether the optional ``timm`` package can be imported."""
    try:
        import timm  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def timm_model_names() -> list[str]:
    """Sorted names of timm's model architectures (``timm.list_models()``); [] when timm is not installed.

    This is what ``GET /v1/architectures`` lists as the allowed ``name`` values of the ``timm`` family.
    """
    if not timm_available():
        return []
    import timm

    return sorted(timm.list_models())


def build_timm_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """A fresh ``timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)``.

    ReLU modules are switched to ``inplace=False`` (no state_dict effect), as for torchvision models.
    Raises SpecError when timm is not installed or ``name`` is not a timm model.
    """
    if not timm_available():
        raise SpecError(TIMM_INSTALL_HINT, field="arch.family")
    import timm

    if name not in timm_model_names():
        raise SpecError(f"unknown timm model {name!r}", field="arch.name")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return model
