"""Pixel operators of the story_continuation image head (pure torch, no parameters).

Moving pixels (:func:`separable_shift`, :func:`shift_pixels`, :func:`warp`), the motion
evidence the kernel head reads (:func:`motion_evidence`), which source reads a target best
(:func:`best_source`), and the image losses (:func:`weighted_l1`, :func:`edge_loss`).
Images are (B, C, S, S) in [0, 1].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def best_source(candidates: torch.Tensor, target: torch.Tensor, margin: float = 0.02) -> torch.Tensor:
    """Per pixel, which of the kernel head's sources reads ``target`` best.

    Args:
        candidates: (B, 3, 3, S, S): the moved 4th frame, the 1st frame and the painted layer.
        target: (B, 3, S, S).
        margin: a source other than the moved 4th frame (index 0) wins a pixel only when its mean
            absolute colour error is below the moved frame's by more than this (a tie keeps the move).

    Returns:
        (B, S, S) source indices.
    """
    errors = (candidates - target[:, None]).abs().mean(dim=2)  # (B, 3, S, S)
    errors[:, 1:] += margin
    return errors.min(dim=1).indices  # (min is several times faster than argmin over dim 1 on CPU)


def shift_pixels(images: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Output pixel p reads ``images`` at p + (dx[p], dy[p]) (whole pixels, the edge repeated outside).

    images (B, C, S, S); dx, dy (B, S, S) integer offsets.
    """
    batch, channels, height, width = images.shape
    ys = (torch.arange(height, device=images.device)[None, :, None] + dy).clamp(0, height - 1)
    xs = (torch.arange(width, device=images.device)[None, None, :] + dx).clamp(0, width - 1)
    index = (ys * width + xs).flatten(1)[:, None].expand(batch, channels, -1)  # (B, C, S·S)
    return images.flatten(2).gather(2, index).view_as(images)


def motion_evidence(f3: torch.Tensor, f4: torch.Tensor, radius: int, scale: float = 0.05) -> torch.Tensor:
    """A correlation layer for constant velocity, per axis: how well offset o explains output pixel p.

    For each offset o in -radius..radius along x (then y), with d(a, b) the mean absolute
    colour difference: ``exp(-d(f4(p+o), f3(p+2o)) / scale)`` (the 4th frame's pixel at p + o
    came from p + 2o in the 3rd: a pixel that moved by -o keeps moving) times
    ``1 - exp(-d(f4(p+o), f3(p+o)) / scale)`` (that pixel changed between the frames, so it is
    a moving one: this is what tells an object moving into the background apart from the
    still background, which offset 0 explains too). At offset 0 both factors read the same
    difference, so it scores at most 1/4.

    Args:
        f3, f4: the 3rd and 4th frames (B, 3, S, S) in [0, 1] (input data: no gradient flows back
            to them).

    Returns:
        (B, 2K, S, S), K = 2·radius + 1: the x offsets' scores, then the y offsets'.
    """
    with torch.no_grad():  # a function of the input frames only
        size = f4.shape[-1]
        scores = []
        for axis in (-1, -2):
            # read shifted copies as slices of edge-replicated frames (no copies of whole frames)
            pad = (radius, radius, 0, 0) if axis == -1 else (0, 0, radius, radius)
            padded4 = F.pad(f4, pad, mode="replicate")
            padded3 = F.pad(f3, tuple(2 * p for p in pad), mode="replicate")

            def at(padded: torch.Tensor, start: int, axis: int = axis) -> torch.Tensor:
                return padded[..., start:start + size] if axis == -1 else padded[..., start:start + size, :]

            for o in range(-radius, radius + 1):
                here = at(padded4, o + radius)
                # the mean over the 3 channels, as a sum scaled once
                agree = (here - at(padded3, 2 * o + 2 * radius)).abs_().sum(dim=1).mul_(-1.0 / (3 * scale)).exp_()
                changed = (here - at(padded3, o + 2 * radius)).abs_().sum(dim=1).mul_(-1.0 / (3 * scale)).exp_()
                scores.append(agree.mul_(changed.neg_().add_(1.0)))
        return torch.stack(scores, dim=1)


def warp(images: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """Move pixels: output pixel p reads ``images`` at p + displacement (in pixels), bilinear.

    images (B, C, S, S); displacement (B, 2, S, S) as (dx, dy).
    """
    _batch, _, height, width = images.shape
    ys, xs = torch.meshgrid(torch.arange(height, device=images.device, dtype=images.dtype),
                            torch.arange(width, device=images.device, dtype=images.dtype), indexing="ij")
    x = xs + displacement[:, 0]
    y = ys + displacement[:, 1]
    grid = torch.stack([2 * x / (width - 1) - 1, 2 * y / (height - 1) - 1], dim=-1)  # (B, S, S, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)


def separable_shift(images: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor) -> torch.Tensor:
    """Each output pixel p = sum over (i, j) of ky[i](p) kx[j](p) images(p + (j - r, i - r)).

    images (B, C, S, S); kx, ky (B, K, S, S) with K = 2r + 1, each summing to 1 over K: a per-pixel
    separable kernel, i.e. a displacement of up to r pixels each way (a one-hot pair is an exact
    shift) or a blend of them. Outside the image reads the nearest edge pixel.

    When ``images`` need no gradient (the model's case: they are input frames), a hand-written
    backward keeps the two partial sums its gradients need and nothing else (1.8x faster, forward
    and backward, than letting autograd record the products; the same values to float rounding).
    """
    if images.requires_grad:
        return _separable_shift_autograd(images, kx, ky)
    return _SeparableShift.apply(images, kx, ky)


def _separable_shift_autograd(images: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor) -> torch.Tensor:
    height = images.shape[-2]
    k = kx.shape[1]
    r = k // 2
    padded = F.pad(images, (r, r, r, r), mode="replicate")
    weights_x = kx.permute(0, 2, 3, 1).unsqueeze(1)  # (B, 1, S, S, K)
    out = None
    for i in range(k):  # one vertical offset at a time: a (B, C, S, S, K) view, never the K x K patches
        rows = padded[:, :, i:i + height].unfold(3, k, 1)  # (B, C, S, S, K): horizontal offsets
        term = ky[:, i:i + 1] * (rows * weights_x).sum(dim=-1)
        out = term if out is None else out + term
    return out


class _SeparableShift(torch.autograd.Function):
    """:func:`separable_shift` for images without gradient. With X_ij the images read at offset
    (j - r, i - r): forward keeps h_i = sum_j kx_j X_ij and v_j = sum_i ky_i X_ij (K x (B, C, S, S)
    each), since out = sum_i ky_i h_i, d out / d ky_i = h_i and d out / d kx_j = v_j."""

    @staticmethod
    def forward(ctx, images: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor) -> torch.Tensor:
        _batch, _channels, height, width = images.shape
        k = kx.shape[1]
        r = k // 2
        padded = F.pad(images, (r, r, r, r), mode="replicate")
        rows_sums = images.new_zeros((k, *images.shape))  # h_i
        column_sums = images.new_zeros((k, *images.shape))  # v_j
        for i in range(k):
            rows = padded[:, :, i:i + height]
            weight_y = ky[:, i:i + 1]
            for j in range(k):
                pixels = rows[..., j:j + width]
                rows_sums[i].addcmul_(pixels, kx[:, j:j + 1])
                column_sums[j].addcmul_(pixels, weight_y)
        ctx.save_for_backward(rows_sums, column_sums)
        return (rows_sums * ky.transpose(0, 1).unsqueeze(2)).sum(dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor, torch.Tensor]:
        rows_sums, column_sums = ctx.saved_tensors
        grad_ky = (grad[None] * rows_sums).sum(dim=2).transpose(0, 1)  # (B, K, S, S)
        grad_kx = (grad[None] * column_sums).sum(dim=2).transpose(0, 1)
        return None, grad_kx, grad_ky


def weighted_l1(predicted: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error, each pixel weighted by ``weights`` (broadcast over channels) when given."""
    error = (predicted - target).abs()
    if weights is None:
        return error.mean()
    weights = weights.expand_as(error)
    return (error * weights).sum() / weights.sum()


def edge_loss(predicted: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """L1 between the horizontal and vertical pixel differences of two image batches (weighted like
    :func:`weighted_l1`, a difference taking the larger weight of its two pixels)."""
    def grads(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]

    (px, py), (tx, ty) = grads(predicted), grads(target)
    if weights is None:
        return (px - tx).abs().mean() + (py - ty).abs().mean()
    wx = torch.maximum(weights[..., :, 1:], weights[..., :, :-1])
    wy = torch.maximum(weights[..., 1:, :], weights[..., :-1, :])
    return weighted_l1(px, tx, wx) + weighted_l1(py, ty, wy)
