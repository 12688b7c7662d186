"""CyCLIP's cyclic-consistency terms on top of the CLIP loss: a worked plug-in variant of FLIP.

CLIP's loss only asks each image to be nearer its own caption than the others. CyCLIP (Goel
et al., "CyCLIP: Cyclic Contrastive Language-Image Pretraining", NeurIPS 2022; the authors'
code github.com/goel-shashank/CyCLIP, src/train.py) adds two penalties on the cosine
similarities of the batch, so that the image and text spaces have the same geometry:

- in-modal: ``||I I^T - T T^T||^2`` (image j vs image k as similar as text j vs text k);
- cross-modal: ``||I T^T - T I^T||^2`` (image j vs text k as similar as image k vs text j);

each a mean over the batch x batch pairs, weighted 0.25 (the paper's lambda_1 = lambda_2).
Masking, model, data and the ``val_loss`` that selects the checkpoint (plain CLIP) stay as
they are; the terms also apply in the unmasked tuning phase. Under DDP they see the whole
global batch, gathered as the CLIP loss gathers it (gradients through this rank's rows, as the
reference).

One difference from the reference: it multiplies each mean by the batch size N (a subclass
with ``batch_scaled = True`` does). On the demo (batch 64, 90 steps at lr 2e-3 after 20 warm-up
steps; the paper warms up for 10,000) that strength first pulls both towers to the terms'
trivial minimum, every similarity equal (the contrastive loss sits at chance, ln 64, for an
epoch), and zero-shot top-1 ends at the colour-only level (0.134 and 0.125 in seeds 0 and 1,
against 0.221 and 0.215 with the built-in loss). Per-pair means train as CLIP does (seed 0:
0.230) with the terms at about 0.5% of the loss.

Use it from the config, with nothing else changed:

    flip:
      experiments:
        cyclip_mask50: {mask_ratio: 0.5, loss: variants/flip/cyclip.py:CyclipLoss}
"""

from __future__ import annotations

from open_clip.loss import gather_features

from workflow.flip.loss import FlipLoss


class CyclipLoss(FlipLoss):
    """open_clip's CLIP loss + CyCLIP's in-modal and cross-modal consistency terms."""

    in_modal_weight = 0.25
    cross_modal_weight = 0.25
    #: The reference's N x the per-pair mean (see the module docstring).
    batch_scaled = False

    def forward(self, image_features, text_features, logit_scale, logit_bias=None,
                output_dict=False):  # fmt: skip
        clip = super().forward(image_features, text_features, logit_scale, logit_bias)
        images, texts = image_features, text_features
        if self.world_size > 1:  # the global batch, this rank's rows carrying the gradient
            images, texts = gather_features(
                images, texts, gather_with_grad=self.gather_with_grad, rank=self.rank,
                world_size=self.world_size, use_horovod=self.use_horovod,
            )  # fmt: skip
        scale = images.shape[0] if self.batch_scaled else 1
        cross = images @ texts.T
        in_modal = (images @ images.T - texts @ texts.T).square().mean() * scale
        cross_modal = (cross - cross.T).square().mean() * scale
        terms = {
            "contrastive_loss": clip,
            "in_modal_cyclic_loss": self.in_modal_weight * in_modal,
            "cross_modal_cyclic_loss": self.cross_modal_weight * cross_modal,
        }
        return terms if output_dict else sum(terms.values())
