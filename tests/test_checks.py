"""Every check passes the reference, says "not implemented" for a stub, and catches realistic
mistakes with a message that names the mistake (mutation tests)."""

import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

import mae_course as M
from mae_course import checks as C
from mae_course.evaluation.protocols import layer_decay_groups, probe_head
from mae_course.evaluation.segment import iou_per_class
from mae_course.experiments.flops import block_flops
from mae_course.experiments.scaling import batch_plan, rank_indices
from mae_course.model.encoder import Block, attention
from mae_course.seeing.reconstruction import denormalize_patches, paste_visible
from mae_course.train.recipe import lr_at, train_epoch

# ---------------------------------------------------------------------------- patchify


def patchify_channel_first(imgs, p):
    return rearrange(imgs, "n c (h p) (w q) -> n (h w) (c p q)", p=p, q=p)


def patchify_column_major(imgs, p):
    return rearrange(imgs, "n c (h p) (w q) -> n (w h) (p q c)", p=p, q=p)


def patchify_swapped_pixels(imgs, p):
    return rearrange(imgs, "n c (h p) (w q) -> n (h w) (q p c)", p=p, q=p)


def patchify_transposed(imgs, p):
    return rearrange(imgs, "n c (h p) (w q) -> n (p q c) (h w)", p=p, q=p)


def patchify_naive_reshape(imgs, p):  # reshape without permuting: mixes pixels of different patches
    n, c, h, w = imgs.shape
    return imgs.reshape(n, (h // p) * (w // p), p * p * c)


def patchify_channels_last_reshape(imgs, p):  # channels last, then the same plain reshape
    n, c, h, w = imgs.shape
    return imgs.permute(0, 2, 3, 1).reshape(n, (h // p) * (w // p), p * p * c)


def patchify_no_size_check(imgs, p):
    n, c, h, w = imgs.shape
    return rearrange(imgs[:, :, : h // p * p, : w // p * p], "n c (h p) (w q) -> n (h w) (p q c)", p=p, q=p)


def patchify_checks_height_only(imgs, p):  # a W not divisible by p slips through to einops
    if imgs.shape[2] % p:
        raise ValueError("H is not divisible by the patch size")
    return rearrange(imgs, "n c (h p) (w q) -> n (h w) (p q c)", p=p, q=p)


def patchify_in_place(imgs, p):
    imgs.mul_(1.0).add_(0.5)
    return M.patchify(imgs, p)


def unpatchify_channel_first(x, p, grid_size=None):
    h, w = grid_size or (int(math.isqrt(x.shape[1])),) * 2
    return rearrange(x, "n (h w) (c p q) -> n c (h p) (w q)", h=h, w=w, p=p, q=p)


def unpatchify_square_only(x, p, grid_size=None):  # ignores grid_size
    side = int(x.shape[1] ** 0.5)
    return rearrange(x, "n (h w) (p q c) -> n c (h p) (w q)", h=side, w=side, p=p, q=p)


def unpatchify_column_major(x, p, grid_size=None):
    h, w = grid_size or (int(math.isqrt(x.shape[1])),) * 2
    return rearrange(x, "n (w h) (p q c) -> n c (h p) (w q)", h=h, w=w, p=p, q=p)


def unpatchify_naive_reshape(x, p, grid_size=None):
    h, w = grid_size or (int(math.isqrt(x.shape[1])),) * 2
    return x.reshape(x.shape[0], x.shape[2] // (p * p), h * p, w * p)


# ---------------------------------------------------------------------------- masking


def masking_ignoring_the_noise(x, mask_ratio, noise=None):
    return M.random_masking(x, mask_ratio, noise=None)  # draws its own, whatever it is given


def _masking(
    x,
    mask_ratio,
    noise=None,
    *,
    keep=None,
    descending=False,
    invert=False,
    unshuffle_mask=True,
    return_shuffle=False,
    sort_kept=False,
    shared_noise=False,
):
    n, length, d = x.shape
    len_keep = int(length * (1 - mask_ratio)) if keep is None else keep(length, mask_ratio)
    if noise is None:
        noise = torch.rand(1, length).expand(n, length) if shared_noise else torch.rand(n, length)
    ids_shuffle = torch.argsort(noise, dim=1, descending=descending)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    if sort_kept:
        ids_keep = ids_keep.sort(dim=1).values
    x_visible = torch.gather(x, 1, repeat(ids_keep, "n k -> n k d", d=d))
    mask = torch.ones(n, length)
    mask[:, :len_keep] = 0
    if unshuffle_mask:
        mask = torch.gather(mask, 1, ids_restore)
    if invert:
        mask = 1 - mask
    return x_visible, mask, (ids_shuffle if return_shuffle else ids_restore)


def masking_with(**options):
    return lambda x, mask_ratio, noise=None: _masking(x, mask_ratio, noise, **options)


# ---------------------------------------------------------------------------- positional embedding


def sincos_with(row_first=False, cos_first=False, freq_denominator=None, cls=True, cls_value=0.0):
    def fn(embed_dim, grid_size, cls_token=True):
        rows, cols = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
        r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
        half = embed_dim // 2

        def axis(pos):
            k = torch.arange(half // 2, dtype=torch.float64)
            denominator = half / 2 if freq_denominator is None else freq_denominator(embed_dim)
            angles = pos.flatten().double()[:, None] / 10000 ** (k / denominator)
            return torch.cat([angles.cos(), angles.sin()] if cos_first else [angles.sin(), angles.cos()], 1)

        codes = [axis(r), axis(c)] if row_first else [axis(c), axis(r)]
        emb = torch.cat(codes, 1).float()
        if cls:
            emb = torch.cat([torch.full((1, embed_dim), cls_value), emb])
        return emb.unsqueeze(0)

    return fn


# ---------------------------------------------------------------------------- decoder and loss


def unshuffle_with(order="append", ids="restore"):
    def fn(x_visible, mask_token, ids_restore):
        n, k, d = x_visible.shape
        length = ids_restore.shape[1]
        tokens = mask_token.expand(n, length - k, d)
        seq = torch.cat([x_visible, tokens], 1) if order == "append" else torch.cat([tokens, x_visible], 1)
        if ids == "none":
            return seq
        index = ids_restore if ids == "restore" else torch.argsort(ids_restore, dim=1)
        return torch.gather(seq, 1, repeat(index, "n l -> n l d", d=d))

    return fn


def loss_all_patches(pred, target, mask):
    return ((pred - target) ** 2).mean()


def loss_visible_patches(pred, target, mask):
    per_patch = ((pred - target) ** 2).mean(-1)
    return (per_patch * (1 - mask)).sum() / (1 - mask).sum()


def loss_summed_patch(pred, target, mask):
    return (((pred - target) ** 2).sum(-1) * mask).sum() / mask.sum()


def loss_wrong_denominator(pred, target, mask):
    return (((pred - target) ** 2).mean(-1) * mask).mean()


def norm_biased(t, eps=1e-6):
    return (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True, unbiased=False) + eps) ** 0.5


def norm_eps_on_std(t, eps=1e-6):
    return (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) ** 0.5 + eps)


def norm_no_eps(t, eps=1e-6):
    return (t - t.mean(-1, keepdim=True)) / t.var(-1, keepdim=True) ** 0.5


def norm_whole_batch(t, eps=1e-6):
    return (t - t.mean()) / (t.var() + eps) ** 0.5


def norm_across_patches(t, eps=1e-6):
    return (t - t.mean(1, keepdim=True)) / (t.var(1, keepdim=True) + eps) ** 0.5


# ---------------------------------------------------------------------------- attention


def attention_unscaled(q, k, v):
    return (q @ k.transpose(-2, -1)).softmax(-1) @ v


def attention_scaled_by_d(q, k, v):
    return (q @ k.transpose(-2, -1) / q.shape[-1]).softmax(-1) @ v


def attention_softmax_over_queries(q, k, v):
    return (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(-2) @ v


def attention_weights_only(q, k, v):
    return (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(-1)


# ---------------------------------------------------------------------------- Transformer block


def block_with(
    post_norm=False,
    attn_residual=True,
    mlp_residual=True,
    hidden=None,
    act=nn.GELU,
    eps=1e-6,
    reuse_norm1=False,
    sequential=True,
):
    """A learner's TransformerBlock class with one of the usual mistakes."""

    class LearnersBlock(nn.Module):
        def __init__(self, dim, num_heads, mlp_ratio=4.0):
            super().__init__()
            width = int(dim * mlp_ratio) if hidden is None else hidden(dim)
            self.norm1 = nn.LayerNorm(dim, eps=eps)
            self.attn = M.model.encoder.Attention(dim, num_heads)
            self.norm2 = nn.LayerNorm(dim, eps=eps)
            if sequential:
                self.mlp = nn.Sequential(nn.Linear(dim, width), act(), nn.Linear(width, dim))
            else:
                self.mlp = nn.Module()
                self.mlp.fc1, self.mlp.fc2 = nn.Linear(dim, width), nn.Linear(width, dim)

        def forward(self, x):
            mlp = self.mlp if sequential else (lambda h: self.mlp.fc2(act()(self.mlp.fc1(h))))
            if post_norm:
                x = self.norm1(x + self.attn(x))
                return self.norm2(x + mlp(x))
            a = self.attn(self.norm1(x))
            x = x + a if attn_residual else a
            m = mlp((self.norm1 if reuse_norm1 else self.norm2)(x))
            return x + m if mlp_residual else m

    return LearnersBlock


def block_with_own_names(dim, num_heads, mlp_ratio=4.0):  # right computation, names the checkpoints do not know
    block = block_with()(dim, num_heads, mlp_ratio)
    block.ff = block.mlp
    del block.mlp
    block.forward = lambda x: (lambda h: h + block.ff(block.norm2(h)))(x + block.attn(block.norm1(x)))
    return block


# ---------------------------------------------------------------------------- lr schedule


def lr_no_warmup(step, total_steps, warmup_steps, lr, min_lr=0.0):
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * step / total_steps))


def lr_warmup_off_by_one(step, total_steps, warmup_steps, lr, min_lr=0.0):
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    return lr_at(step, total_steps, warmup_steps, lr, min_lr)


def lr_cosine_from_zero(step, total_steps, warmup_steps, lr, min_lr=0.0):
    if step < warmup_steps:
        return lr * step / warmup_steps
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * step / total_steps))


def lr_ignores_min_lr(step, total_steps, warmup_steps, lr, min_lr=0.0):
    return lr_at(step, total_steps, warmup_steps, lr, 0.0)


def lr_linear_decay(step, total_steps, warmup_steps, lr, min_lr=0.0):
    if step < warmup_steps:
        return lr * step / warmup_steps
    return lr - (lr - min_lr) * (step - warmup_steps) / max(1, total_steps - warmup_steps)


# ---------------------------------------------------------------------------- an epoch of steps


def epoch_with(
    lr_index=lambda first, i: first + i, set_each_step=True, zero_grad=True, pass_ratio=True, as_tensor=False
):
    """train_epoch with one realistic mistake: which step's lr, how often it is set, zero_grad, mask_ratio."""

    def train_epoch_variant(model, optimizer, batches, lr_of, first_step=0, mask_ratio=0.75):
        losses = []
        for i, imgs in enumerate(batches):
            if set_each_step or i == 0:
                for group in optimizer.param_groups:
                    group["lr"] = lr_of(lr_index(first_step, i))
            loss, _, _ = model(imgs, mask_ratio=mask_ratio) if pass_ratio else model(imgs)
            if zero_grad:
                optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.detach() if as_tensor else loss.item())
        return losses

    return train_epoch_variant


# ---------------------------------------------------------------------------- evaluation (lesson 07)


def head_without_norm(dim, num_classes):
    linear = torch.nn.Linear(dim, num_classes)
    torch.nn.init.trunc_normal_(linear.weight, std=0.01)
    torch.nn.init.zeros_(linear.bias)
    return torch.nn.Sequential(linear)


def head_with(norm=None, order="norm first", init_weight=True, zero_bias=True, bias=True, container=None):
    def fn(dim, num_classes):
        linear = torch.nn.Linear(dim, num_classes, bias=bias)
        if init_weight:
            torch.nn.init.trunc_normal_(linear.weight, std=0.01)
        if zero_bias and bias:
            torch.nn.init.zeros_(linear.bias)
        layer = norm(dim) if norm else torch.nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        layers = [layer, linear] if order == "norm first" else [linear, layer]
        return container(layers) if container else nn.Sequential(*layers)

    return fn


def groups_with(exponent_shift=0, reverse=False, decay_everything=False, tokens_in_block0=False, keep_frozen=False):
    from mae_course.evaluation.protocols import layer_id

    def fn(model, weight_decay, layer_decay):
        num_layers = len(model.blocks) + 1
        groups = []
        for name, param in model.named_parameters():
            if not param.requires_grad and not keep_frozen:
                continue
            layer = layer_id(name, num_layers)
            if tokens_in_block0 and name in ("cls_token", "pos_embed"):
                layer = 1
            power = layer if reverse else num_layers - layer + exponent_shift
            decayed = decay_everything or (param.ndim > 1 and name not in ("cls_token", "pos_embed"))
            groups.append(
                {"params": [param], "weight_decay": weight_decay if decayed else 0.0, "lr_scale": layer_decay**power}
            )
        return groups

    return fn


# ---------------------------------------------------------------------------- lesson 06


def paste_swapped(pred, target, mask):
    m = mask.float().unsqueeze(-1)
    return target * m + pred * (1 - m)


def paste_nothing(pred, target, mask):
    return pred


def paste_bool_arithmetic(pred, target, mask):  # works for float masks only: 1 - bool fails
    return pred * mask.unsqueeze(-1) + target * (~mask.bool()).unsqueeze(-1).float() * 0.5


def paste_one_minus_mask(pred, target, mask):  # right for a float mask; for a bool one, torch refuses 1 - mask
    m = mask.unsqueeze(-1)
    return pred * m + target * (1 - m)


def denorm_eps_on_std(pred, target, eps=1e-6):
    return pred * (target.std(-1, keepdim=True) + eps) + target.mean(-1, keepdim=True)


def denorm_no_eps(pred, target, eps=1e-6):
    return pred * target.std(-1, keepdim=True) + target.mean(-1, keepdim=True)


def denorm_biased(pred, target, eps=1e-6):
    return pred * (target.var(-1, keepdim=True, unbiased=False) + eps) ** 0.5 + target.mean(-1, keepdim=True)


def denorm_no_mean(pred, target, eps=1e-6):
    return pred * (target.var(-1, keepdim=True) + eps) ** 0.5


def denorm_own_stats(pred, target, eps=1e-6):
    return pred * (pred.var(-1, keepdim=True) + eps) ** 0.5 + pred.mean(-1, keepdim=True)


def denorm_normalizes(pred, target, eps=1e-6):
    return (pred - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + eps) ** 0.5


# ---------------------------------------------------------------------------- lesson 08


def flops_without_attention(tokens, dim, mlp_ratio=4.0):
    return (8 + 4 * mlp_ratio) * tokens * dim * dim


def flops_as_multiply_adds(tokens, dim, mlp_ratio=4.0):
    return (4 + 2 * mlp_ratio) * tokens * dim * dim + 2 * tokens * tokens * dim


def flops_without_output_projection(tokens, dim, mlp_ratio=4.0):
    return (6 + 4 * mlp_ratio) * tokens * dim * dim + 4 * tokens * tokens * dim


def flops_qkv_as_d_to_d(tokens, dim, mlp_ratio=4.0):  # q, k and v counted as one D -> D matrix
    return (4 + 4 * mlp_ratio) * tokens * dim * dim + 4 * tokens * tokens * dim


def flops_one_mlp_layer(tokens, dim, mlp_ratio=4.0):
    return (8 + 2 * mlp_ratio) * tokens * dim * dim + 4 * tokens * tokens * dim


# ---------------------------------------------------------------------------- forward_encoder, forward_decoder


def encoder_with(positions_after_masking=False, cls_position=True, cls_last=False, final_norm=True):
    """The whole encoder from the model's parts, with one classic mistake."""

    def forward_encoder(model, imgs, mask_ratio, noise):
        x = model.patch_embed(imgs)
        if not positions_after_masking:
            x = x + model.pos_embed[:, 1:]
        x, mask, ids_restore = M.random_masking(x, mask_ratio, noise)
        if positions_after_masking:
            x = x + model.pos_embed[:, 1 : 1 + x.shape[1]]
        cls = model.cls_token + (model.pos_embed[:, :1] if cls_position else 0)
        cls = cls.expand(x.shape[0], -1, -1)
        x = torch.cat([x, cls] if cls_last else [cls, x], dim=1)
        for block in model.blocks:
            x = block(x)
        return (model.norm(x) if final_norm else x), mask, ids_restore

    return forward_encoder


def decoder_with(table="decoder", keep_cls=True, drop_cls=True, final_norm=True):
    """The whole decoder from the model's parts, with one classic mistake."""

    def forward_decoder(model, latent, ids_restore):
        x = model.decoder_embed(latent)
        patches = M.unshuffle_with_mask_tokens(x[:, 1:], model.mask_token, ids_restore)
        tables = {"decoder": model.decoder_pos_embed, "encoder": model.pos_embed, "none": 0}
        if keep_cls:
            x = torch.cat([x[:, :1], patches], dim=1) + tables[table]
        else:
            x = patches + model.decoder_pos_embed[:, 1:]
        for block in model.decoder_blocks:
            x = block(x)
        x = model.decoder_pred(model.decoder_norm(x) if final_norm else x)
        return x[:, 1:] if keep_cls and drop_cls else x

    return forward_decoder


# ---------------------------------------------------------------------------- iou_per_class


def iou_with(denominator, absent=float("nan"), as_int=False, nan_unless=None):
    """The IoU per class with one classic mistake in its denominator or its absent classes;
    ``nan_unless(truly, predicted)``: where the IoU is a number, NaN elsewhere."""

    def iou(confusion):
        c = confusion if as_int else confusion.double()
        tp, truly, predicted = c.diag(), c.sum(1), c.sum(0)
        union = denominator(tp, truly, predicted)
        if as_int:
            return tp // union.clamp(min=1)
        measured = union > 0 if nan_unless is None else nan_unless(truly, predicted)
        return torch.where(measured, tp / union.clamp(min=1e-12), torch.full_like(union, absent))

    return iou


# ---------------------------------------------------------------------------- the table

# ---------------------------------------------------------------------------- batch_plan, pretraining_hours


def plan_forgets_gpus(target, per_gpu, gpus, blr):
    return target // per_gpu, blr * target / 256


def plan_lr_from_one_gpu(target, per_gpu, gpus, blr):
    return target // (per_gpu * gpus), blr * per_gpu / 256


def plan_without_256(target, per_gpu, gpus, blr):
    return target // (per_gpu * gpus), blr * target


def plan_rounds_down(target, per_gpu, gpus, blr):
    return target // (per_gpu * gpus), blr * target / 256  # never refuses an unreachable batch


def plan_tests_per_gpu_only(target, per_gpu, gpus, blr):
    if target % per_gpu:
        raise ValueError("the per-GPU batch does not divide the target")
    return target // (per_gpu * gpus), blr * target / 256


def plan_tests_each_factor(target, per_gpu, gpus, blr):
    if target % per_gpu or target % gpus:
        raise ValueError("the per-GPU batch or the GPUs do not divide the target")
    return target // (per_gpu * gpus), blr * target / 256


def plan_lr_from_one_step(target, per_gpu, gpus, blr):
    return target // (per_gpu * gpus), blr * per_gpu * gpus / 256


def share_with(
    seed_of=lambda seed, epoch, rank: seed + epoch,
    pad=True,
    strided=True,
    shuffle=True,
    global_rng=False,
    pad_from_end=False,
):
    """rank_indices with one classic mistake."""

    def share(size, rank, world, epoch, seed=0):
        if global_rng:
            torch.manual_seed(seed_of(seed, epoch, rank))
            order = torch.randperm(size).tolist()
        elif shuffle:
            order = torch.randperm(size, generator=torch.Generator().manual_seed(seed_of(seed, epoch, rank))).tolist()
        else:
            order = list(range(size))
        per = -(-size // world) if pad else size // world
        if pad_from_end:  # pads with the last indices: only the ranks that get the padding differ
            order = (order + order[::-1] * world)[: per * world]
        order = (order + order * world)[: per * world]
        return order[rank::world] if strided else order[rank * per : (rank + 1) * per]

    return share


def share_unpadded(size, rank, world, epoch, seed=0):
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    return order[rank::world]


MUTANTS = {
    "check_patchify": [
        (patchify_channel_first, r"ordered \(channel, row, column\); expected \(row, column, channel\)"),
        (patchify_column_major, r"column-major.*\[0, 1\] should be \[2, 18, 3, 19"),
        (patchify_swapped_pixels, r"ordered \(column, row, channel\)"),
        (patchify_transposed, r"\(N, p\*p\*C, L\)"),
        (patchify_naive_reshape, r"a plain reshape cuts the image's memory .* not a patch"),
        (patchify_channels_last_reshape, r"a plain reshape"),
        (patchify_no_size_check, r"no error was raised; raise a ValueError"),
        (patchify_checks_height_only, r"raised EinopsError on an 8x10 image .*; raise a ValueError"),
        (patchify_in_place, r"changed its input images in place"),
    ],
    "check_unpatchify": [
        (unpatchify_channel_first, r"ordered \(channel, row, column\)"),
        (unpatchify_column_major, r"column-major"),
        (unpatchify_square_only, r"raised EinopsError on .* grid_size=\(2, 3\)"),
        (unpatchify_naive_reshape, r"a plain reshape of the patches does not rebuild the image"),
    ],
    "check_random_masking": [
        (masking_with(invert=True), r"mask is 1 for kept tokens"),
        (masking_with(unshuffle_mask=False), r"still in the shuffled order"),
        (masking_with(descending=True), r"largest noise"),
        (masking_with(keep=lambda L, r: int(L * r)), r"fraction removed"),
        (masking_ignoring_the_noise, r"two different results for the same given noise: it draws its own"),
        (masking_with(keep=lambda L, r: int(L * (1 - r)) + 1), r"off-by-one"),
        (masking_with(keep=lambda L, r: round(L * (1 - r))), r"kept 4 tokens, expected 3: an off-by-one"),
        (masking_with(return_shuffle=True), r"returned ids_shuffle"),
        (masking_with(sort_kept=True), r"sorted by position"),
        (masking_with(shared_noise=True), r"all samples got the same mask"),
    ],
    "check_sincos_pos_embed": [
        (sincos_with(row_first=True), r"first half encodes the row"),
        (sincos_with(cos_first=True), r"\[cos \| sin\]"),
        (sincos_with(freq_denominator=lambda d: d / 2), r"wrong frequencies"),
        (sincos_with(cls=False), r"no cls row"),
        (sincos_with(cls_value=1.0), r"must be all zeros"),
    ],
    "check_transformer_block": [
        (block_with(post_norm=True), r"is post-norm"),
        (block_with(attn_residual=False), r"no residual around the attention"),
        (block_with(mlp_residual=False), r"no residual around the MLP"),
        (block_with(attn_residual=False, mlp_residual=False), r"no residuals at all"),
        (block_with(hidden=lambda d: d), r"hidden layer has 32 units; it maps 32 -> int\(dim \* mlp_ratio\) = 128"),
        (block_with(hidden=lambda d: 4 * d), r"ignores mlp_ratio: .* must be int\(dim \* mlp_ratio\) = 64, not 128"),
        (block_with(act=nn.ReLU), r"uses ReLU in the MLP"),
        (block_with(act=lambda: nn.GELU(approximate="tanh")), r"tanh approximation of GELU"),
        (block_with(reuse_norm1=True), r"normalizes the MLP's input with norm1"),
        (block_with(eps=1e-5), r"norm1 has eps=1e-05; the ViT's LayerNorms use eps=1e-6"),
        (block_with_own_names, r"not named as in the official checkpoints \(missing mlp.fc1.bias.*unexpected ff.0"),
    ],
    "check_attention": [
        (attention_unscaled, r"not scaled"),
        (attention_scaled_by_d, r"divided by d; divide by sqrt\(d\)"),
        (attention_softmax_over_queries, r"softmax runs over the queries"),
        (attention_weights_only, r"attention weights; multiply them with v"),
    ],
    "check_unshuffle_with_mask_tokens": [
        (unshuffle_with(ids="none"), r"still in the shuffled order"),
        (unshuffle_with(order="prepend"), r"after the visible ones"),
        (unshuffle_with(ids="shuffle"), r"not with the shuffle itself"),
    ],
    "check_masked_mse_loss": [
        (loss_all_patches, r"averages over all patches"),
        (loss_visible_patches, r"averages over the visible patches"),
        (loss_summed_patch, r"sums over each patch's values"),
        (loss_wrong_denominator, r"divide by the number removed"),
    ],
    "check_norm_pix_target": [
        (norm_biased, r"biased variance"),
        (norm_eps_on_std, r"adds eps to the standard deviation"),
        (norm_no_eps, r"constant patch gave inf or nan"),
        (norm_whole_batch, r"whole batch"),
        (norm_across_patches, r"across patches"),
    ],
    "check_lr_schedule": [
        (lr_no_warmup, r"no warmup"),
        (lr_warmup_off_by_one, r"warmup off by one"),
        (lr_cosine_from_zero, r"starts after warmup"),
        (lr_ignores_min_lr, r"should end at min_lr"),
        (lr_linear_decay, r"half a cosine"),
    ],
    "check_probe_head": [
        (head_without_norm, r"no BatchNorm1d before the linear layer"),
        (head_with(norm=lambda d: torch.nn.BatchNorm1d(d, eps=1e-6)), r"affine=False"),
        (head_with(norm=torch.nn.LayerNorm), r"uses LayerNorm"),
        (head_with(order="linear first"), r"before the linear layer"),
        (head_with(norm=lambda d: torch.nn.BatchNorm1d(d, affine=False)), r"eps=1e-6"),
        (head_with(init_weight=False, zero_bias=False), r"start the linear layer's bias at zero"),
        (head_with(init_weight=False), r"initialise the linear weights with std 0.01"),
        (head_with(bias=False), r"the linear layer has no bias"),
    ],
    "check_layer_decay_groups": [
        (groups_with(exponent_shift=1), r"head \(and the final norm\) must keep the full lr"),
        (groups_with(reverse=True), r"decay runs the wrong way"),
        (groups_with(decay_everything=True), r"no weight decay"),
        (groups_with(tokens_in_block0=True), r"belong with the patch embedding"),
        (groups_with(keep_frozen=True), r"frozen parameters"),
    ],
    "check_paste_visible": [
        (paste_swapped, r"roles are swapped"),
        (paste_nothing, r"returned the prediction everywhere"),
        (paste_bool_arithmetic, r"wrong patches"),
    ],
    "check_denormalize_patches": [
        (denorm_biased, r"biased variance"),
        (denorm_no_mean, r"forgets to add the patch's mean"),
        (denorm_own_stats, r"statistics of the prediction"),
        (denorm_normalizes, r"normalizes again"),
        (denorm_eps_on_std, r"adds eps to the standard deviation"),
        (denorm_no_eps, r"leaves out eps"),
    ],
    "check_block_flops": [
        (flops_without_attention, r"attention products are missing"),
        (flops_as_multiply_adds, r"a multiply-add is 2 FLOPs"),
        (flops_without_output_projection, r"the output projection \(D -> D\) is missing"),
        (flops_qkv_as_d_to_d, r"the qkv projection maps D to 3D"),
        (flops_one_mlp_layer, r"MLP has two layers"),
    ],
    "check_batch_plan": [
        (plan_forgets_gpus, r"forgets the GPUs"),
        (plan_lr_from_one_gpu, r"one GPU's batch"),
        (plan_without_256, r"division by 256"),
        (plan_rounds_down, r"96 images x 8 GPUs = 768 per step cannot make exactly 4096.*raise ValueError"),
        (plan_tests_per_gpu_only, r"64 divides 4096 but 64 x 3 GPUs = 192 does not.*effective batch of 4032"),
        (plan_tests_each_factor, r"128 and 64 each divide 4096, but 128 x 64 GPUs = 8192 does not"),
        (plan_lr_from_one_step, r"scales blr by one step's batch"),
    ],
    "check_forward_encoder": [
        (encoder_with(positions_after_masking=True), r"adds the positions after masking"),
        (encoder_with(cls_position=False), r"gives the cls token no position"),
        (encoder_with(cls_last=True), r"puts the cls token after the patches"),
        (encoder_with(final_norm=False), r"leaves out the final LayerNorm"),
    ],
    "check_forward_decoder": [
        (decoder_with(table="encoder"), r"adds the encoder's positional table"),
        (decoder_with(table="none"), r"adds no positions in the decoder"),
        (decoder_with(keep_cls=False), r"leaves the cls token out of the decoder"),
        (decoder_with(drop_cls=False), r"drop the cls token's, pred\[:, 1:\]"),
        (decoder_with(final_norm=False), r"leaves out the decoder's LayerNorm"),
    ],
    "check_iou_per_class": [
        (iou_with(lambda tp, t, p: t), r"that is the recall"),
        (iou_with(lambda tp, t, p: p), r"that is the precision"),
        (iou_with(lambda tp, t, p: t + p), r"counts the pixels both call c twice"),
        (iou_with(lambda tp, t, p: t + p - tp, absent=0.0), r"class 3 is neither present nor predicted.*must be NaN"),
        (iou_with(lambda tp, t, p: t + p - tp, as_int=True), r"integer division"),
        (
            iou_with(lambda tp, t, p: t + p - tp, nan_unless=lambda t, p: t > 0),
            r"class 1 gets IoU NaN; a class predicted but never true has IoU 0",
        ),
        (
            iou_with(lambda tp, t, p: t + p - tp, nan_unless=lambda t, p: p > 0),
            r"class 2 gets IoU NaN; a class true but never predicted has IoU 0",
        ),
    ],
    "check_rank_indices": [
        (
            share_with(seed_of=lambda seed, epoch, rank: seed + epoch + rank),
            r"seeded with seed \+ epoch and not with the rank",
        ),
        (share_with(seed_of=lambda seed, epoch, rank: seed), r"gives epoch 0's order in every epoch"),
        (share_with(strided=False), r"contiguous block; take every world_size-th index"),
        (share_with(shuffle=False), r"does not shuffle"),
        (share_with(pad=False), r"image\(s\) are in no share: pad"),
        (share_unpadded, r"the shares have 3 to 4 indices; every rank needs the same number"),
        (share_with(global_rng=True), r"changed torch's global random state"),
        (
            share_with(pad_from_end=True),
            r"on size 10, .*rank 1's indices from position 3: expected \[\d+\], got \[\d+\]",
        ),
    ],
    "check_train_epoch": [
        (epoch_with(set_each_step=False), r"the lr is set once, not at every step"),
        (epoch_with(lr_index=lambda first, i: first + i + 1), r"off-by-one: the update of step k must use lr_of\(k\)"),
        (epoch_with(lr_index=lambda first, i: i), r"counted from 0 in every epoch; count from first_step"),
        (epoch_with(zero_grad=False), r"gradients pile up"),
        (epoch_with(pass_ratio=False), r"pass mask_ratio=0.5"),
        (epoch_with(as_tensor=True), r"returned tensors; return plain floats"),
    ],
}

REFERENCES = {
    "check_patchify": M.patchify,
    "check_unpatchify": M.unpatchify,
    "check_random_masking": M.random_masking,
    "check_sincos_pos_embed": M.sincos_pos_embed,
    "check_attention": attention,
    "check_transformer_block": Block,
    "check_unshuffle_with_mask_tokens": M.unshuffle_with_mask_tokens,
    "check_masked_mse_loss": M.masked_mse_loss,
    "check_norm_pix_target": M.norm_pix_target,
    "check_lr_schedule": lr_at,
    "check_train_epoch": train_epoch,
    "check_probe_head": probe_head,
    "check_layer_decay_groups": layer_decay_groups,
    "check_paste_visible": paste_visible,
    "check_denormalize_patches": denormalize_patches,
    "check_block_flops": block_flops,
    "check_batch_plan": batch_plan,
    "check_rank_indices": rank_indices,
    "check_iou_per_class": iou_per_class,
    "check_forward_encoder": encoder_with(),
    "check_forward_decoder": decoder_with(),
}


def _reference(check_name):
    return REFERENCES[check_name]


def test_every_check_has_at_least_three_mutants():
    checks = {name for name in C.__all__ if name.startswith("check_")}
    assert checks == set(MUTANTS) == set(REFERENCES)
    assert all(len(mutants) >= 3 for mutants in MUTANTS.values())


@pytest.mark.parametrize("check_name", sorted(MUTANTS))
def test_reference_passes_with_one_line(check_name, capsys):
    getattr(C, check_name)(_reference(check_name))
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("✓ ")


@pytest.mark.parametrize("check_name", sorted(MUTANTS))
def test_stub_is_reported_not_implemented(check_name, capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError(C.STUB_MARKER)  # what scripts/make_exercises.py writes into every exercise

    getattr(C, check_name)(stub)  # must not raise
    out = capsys.readouterr().out
    assert "not implemented yet" in out and out.count("\n") == 1


@pytest.mark.parametrize("check_name", sorted(MUTANTS))
def test_any_other_not_implemented_error_is_a_failure(check_name, capsys):
    def half_written(*args, **kwargs):
        raise NotImplementedError("only float masks so far")

    with pytest.raises(
        C.CheckFailed, match=r"raised NotImplementedError on .*\(line \d+ of half_written\): only float"
    ):
        getattr(C, check_name)(half_written)
    assert capsys.readouterr().out == ""


def head_as_module_list(dim, num_classes):  # holds the right layers, but an nn.ModuleList cannot be called
    return head_with(container=nn.ModuleList)(dim, num_classes)


@pytest.mark.parametrize(
    "check_name, learner, message",
    [
        (
            "check_paste_visible",
            paste_one_minus_mask,
            r"paste_visible raised NotImplementedError on patches of shape \(2, 16, 12\) and a torch.bool mask, in "
            r"`return pred \* m \+ target \* \(1 - m\)` \(line \d+ of paste_one_minus_mask\): Subtraction, the "
            r"`-` operator, with a bool tensor is not supported",
        ),
        (
            "check_probe_head",
            head_as_module_list,
            r"probe_head raised NotImplementedError on the head called on features of shape \(32, 64\), in "
            r"torch/nn/modules/module.py, line \d+: Module \[ModuleList\] is missing the required \"forward\" function",
        ),
    ],
)
def test_pytorch_not_implemented_error_is_the_learners_mistake_not_a_stub(check_name, learner, message, capsys):
    with pytest.raises(C.CheckFailed, match=message):
        getattr(C, check_name)(learner)
    assert "not implemented yet" not in capsys.readouterr().out


def test_a_crash_inside_the_check_is_a_failure_with_its_line():
    with pytest.raises(
        C.CheckFailed, match=r"layer_decay_groups: TypeError while checking it, in .*protocols.py, line"
    ):
        C.check_layer_decay_groups(lambda model, weight_decay, layer_decay: [{"params": 5}])


@pytest.mark.parametrize(
    "check_name, mutant, message",
    [(name, fn, msg) for name, mutants in MUTANTS.items() for fn, msg in mutants],
    ids=[
        f"{name}-{fn.__name__ if hasattr(fn, '__name__') else i}"
        for name, ms in MUTANTS.items()
        for i, (fn, _) in enumerate(ms)
    ],
)
def test_mutant_is_caught_with_its_diagnosis(check_name, mutant, message):
    with pytest.raises(C.CheckFailed, match=message):
        getattr(C, check_name)(mutant)


def test_crash_in_learner_code_names_the_case():
    def broken(imgs, p):
        return imgs.view(-1, 7, 7)

    with pytest.raises(
        C.CheckFailed,
        match=r"patchify raised RuntimeError on images of shape \(2, 3, 8, 8\) with patch_size=4, in "
        r"`return imgs.view\(-1, 7, 7\)` \(line \d+ of broken\): shape '\[-1, 7, 7\]' is invalid",
    ):
        C.check_patchify(broken)


# The same mistakes, in a Chinese lesson (``MAE_COURSE_LANG=zh``): the exact Chinese messages.
CHINESE = [
    (
        "check_random_masking",
        masking_with(invert=True),
        "random_masking：掩码在保留的标记处为 1；约定是 1 = 移除，0 = 保留",
    ),
    (
        "check_patchify",
        patchify_channel_first,
        "patchify：图像块向量的顺序是（通道，行，列）；应为（行，列，通道）。自己看一看："
        "patchify(torch.arange(32.).reshape(1, 2, 4, 4), 2)[0, 0] 应为 [0, 16, 1, 17, 4, 20, 5, 21]",
    ),
    (
        "check_masked_mse_loss",
        loss_all_patches,
        "masked_mse_loss 对所有图像块取了平均；只有被移除的图像块（mask == 1）才计入",
    ),
    (
        "check_lr_schedule",
        lr_no_warmup,
        "lr_at：没有预热：学习率必须在预热步数内从 0 线性上升（首次出现在第 0 步，"
        "total_steps=100、warmup_steps=10、lr=0.001、min_lr=0.0）",
    ),
    (
        "check_batch_plan",
        plan_forgets_gpus,
        "batch_plan：accum_iter 64 忘了 GPU 的数量（输入：目标 4096、每个 GPU 64、"
        "8 个 GPU、blr 0.00015）：每一步处理 64 x 8 张图像",
    ),
    (
        "check_iou_per_class",
        iou_with(lambda tp, t, p: t + p - tp, absent=0.0),
        "iou_per_class：类别 3 既不存在也未被预测，"
        "它的 IoU 却是 0（输入：一个 5 类的矩阵，其中类别 3 既不存在也从未被预测）；没有东西可度量时它必须是 NaN，"
        "这样平均 IoU 才会把它排除在外（0 会拉低平均值，1 会抬高它）",
    ),
]


@pytest.fixture
def chinese():
    C.use_language("zh")
    yield
    C.use_language(None)


@pytest.mark.parametrize("check_name, mutant, message", CHINESE, ids=[c[0] for c in CHINESE])
def test_mutant_is_caught_in_chinese(check_name, mutant, message, chinese):
    with pytest.raises(C.CheckFailed) as failure:
        getattr(C, check_name)(mutant)
    assert str(failure.value) == message


def test_a_crash_and_the_verdicts_in_chinese(chinese, capsys):
    def broken(imgs, p):
        return imgs.view(-1, 7, 7)

    with pytest.raises(
        C.CheckFailed,
        match=r"^patchify 抛出了 RuntimeError（输入：形状为 \(2, 3, 8, 8\)、patch_size=4 的图像），"
        r"位于 `return imgs.view\(-1, 7, 7\)`（broken 的第 \d+ 行）：shape '\[-1, 7, 7\]' is invalid",
    ):
        C.check_patchify(broken)
    C.check_patchify(M.patchify)
    C.check_patchify(lambda imgs, p: (_ for _ in ()).throw(NotImplementedError(C.STUB_MARKER)))
    assert capsys.readouterr().out.splitlines() == [
        "✓ patchify 正确（检查了：形状，（行，列，通道）顺序，非正方形和单通道图像，不合规的尺寸）。",
        "… patchify：还没有实现。在上面的单元格里写好它，运行那个单元格，再重新运行这个检查。（本课接下来使用参考实现。）",
    ]


def test_failure_renders_as_one_line_in_ipython():
    error = C.CheckFailed("patchify: something is off")
    assert error._render_traceback_() == ["\x1b[31m✗ patchify: something is off\x1b[0m"]


def test_non_callable_is_refused():
    with pytest.raises(C.CheckFailed, match="expected a function"):
        C.check_patchify(42)


def test_attention_reference_equals_sdpa():
    q, k, v = torch.randn(3, 2, 4, 5, 8).unbind(0)
    assert torch.allclose(attention(q, k, v), F.scaled_dot_product_attention(q, k, v), atol=1e-6)


def test_the_block_check_accepts_the_official_names_and_a_sequential_mlp(capsys):
    C.check_transformer_block(block_with(sequential=False))  # mlp.fc1 / mlp.fc2, as in the checkpoints
    C.check_transformer_block(block_with())  # nn.Sequential(Linear, GELU, Linear): mlp.0 / mlp.2
    assert capsys.readouterr().out.count("✓ TransformerBlock is correct") == 2
