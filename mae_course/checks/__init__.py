"""Automatic checks for the lessons' exercises.

``check_<exercise>(fn)`` runs your function on several inputs and compares it with the
reference implementation:

* correct: it prints one line starting with ✓;
* wrong: it raises :class:`CheckFailed` with what is wrong and, where it can, how to see it;
* not written yet (the stub still raises its ``NotImplementedError(STUB_MARKER)``): it says so and returns;
  any other error, a NotImplementedError from PyTorch included, is a mistake: it fails with the error's
  message and the line it came from.

``checks/<name>.py`` checks the exercises whose reference lives in the module of the same name:
``checks/patches.py`` against :mod:`mae_course.model.patches`, ``checks/mae.py`` against
:class:`mae_course.model.mae.MaskedAutoencoder`'s forward methods, ``checks/recipe.py`` against
:mod:`mae_course.train.recipe`, ``checks/protocols.py`` against :mod:`mae_course.evaluation.protocols`,
and so on. A check imports reference functions only, never a job.

The checks speak the lesson's language (:mod:`._messages`): English, or Chinese in the Chinese
lessons, which set ``MAE_COURSE_LANG=zh`` in their first cell; ``use_language("zh")`` does the same
from Python.
"""

from . import _messages as messages
from ._core import STUB_MARKER, CheckFailed, not_implemented_message, passed, verdicts
from ._messages import language, use_language
from .decoder import check_masked_mse_loss, check_norm_pix_target, check_unshuffle_with_mask_tokens
from .encoder import check_attention, check_sincos_pos_embed, check_transformer_block
from .flops import check_block_flops
from .mae import check_forward_decoder, check_forward_encoder
from .masking import check_random_masking
from .patches import check_patchify, check_unpatchify
from .protocols import check_layer_decay_groups, check_probe_head
from .recipe import check_lr_schedule, check_train_epoch
from .reconstruction import check_denormalize_patches, check_paste_visible
from .scaling import check_batch_plan, check_rank_indices
from .segment import check_iou_per_class

__all__ = [
    "STUB_MARKER",
    "CheckFailed",
    "check_attention",
    "check_batch_plan",
    "check_block_flops",
    "check_denormalize_patches",
    "check_forward_decoder",
    "check_forward_encoder",
    "check_iou_per_class",
    "check_layer_decay_groups",
    "check_lr_schedule",
    "check_masked_mse_loss",
    "check_norm_pix_target",
    "check_paste_visible",
    "check_patchify",
    "check_probe_head",
    "check_random_masking",
    "check_rank_indices",
    "check_sincos_pos_embed",
    "check_train_epoch",
    "check_transformer_block",
    "check_unpatchify",
    "check_unshuffle_with_mask_tokens",
    "language",
    "messages",
    "not_implemented_message",
    "passed",
    "use_language",
    "verdicts",
]
