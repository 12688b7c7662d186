"""FLIP's training objective, the track's extension point for plug-in variants.

:class:`FlipLoss` is open_clip's ``ClipLoss`` (CLIP's symmetric InfoNCE; under DDP the
features of all ranks are gathered, ``local_loss`` / ``gather_with_grad`` as open_clip's
flags) and the built-in ``loss: clip``. A variant (``loss: <file>.py:<Class>``, checked by
workflow/common/variants.py) subclasses it and defines ``forward``, typically the CLIP loss
(``super().forward``) plus a term of its own. Only the training objective changes: the
``val_loss`` that selects the checkpoint stays the plain CLIP loss in every experiment.
"""

from __future__ import annotations

from open_clip.loss import ClipLoss

from workflow.common.errors import InputError
from workflow.common.variants import is_variant, load_variant


class FlipLoss(ClipLoss):
    """The training loss of a FLIP run: open_clip's ``ClipLoss``, unchanged.

    A variant subclasses it and defines::

        forward(image_features, text_features, logit_scale, logit_bias=None,
                output_dict=False) -> loss (a scalar tensor), or a dict of named scalar
                terms whose sum is the loss when ``output_dict``

    ``image_features`` and ``text_features`` are this rank's L2-normalised embeddings (batch x
    dim), ``logit_scale`` the exponentiated learnable temperature (a scalar, clamped to 100).
    It is built with ``ClipLoss``'s keyword arguments (``local_loss``, ``gather_with_grad``,
    ``cache_labels``, ``rank``, ``world_size``): a variant keeps that constructor and reads
    ``self.rank`` / ``self.world_size`` to gather what it needs across ranks (open_clip's
    ``gather_features``). Its own parameters, if any, are not trained: the optimiser takes the
    CLIP model's only.
    """


#: The built-in losses by their config name.
LOSSES: dict[str, type[FlipLoss]] = {"clip": FlipLoss}


def loss_class(name: str) -> type[FlipLoss]:
    """The built-in loss ``name`` or the plug-in variant it names (``file.py:Class``, a
    :class:`FlipLoss` that defines ``forward``)."""
    if is_variant(name):
        return load_variant("flip", "loss", name)
    if name not in LOSSES:
        raise InputError("loss", f"unknown loss {name!r} (built-in: {', '.join(LOSSES)}, or a "
                         "plug-in variant <file>.py:<Class>)")  # fmt: skip
    return LOSSES[name]
