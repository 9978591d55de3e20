"""Observation frames to image-token embeddings, at a fixed token cost per frame.

GEA feeds every frame of a sample through LLaVA-OneVision's multi-image path: each
frame is padded to a square, resized to the vision tower's input size and encoded on
its own, with no anyres tiling. A frame therefore costs

    ceil(grid / frame_pool_stride) ** 2 + (1 if frame_newline else 0)

tokens, where ``grid = vision image_size // patch_size``: 50 for the tiny default
(56 px frames, 8 px patches, 7 x 7 patches plus one newline) and 196 for the 384 px,
14 px-patch SigLIP of LLaVA-OneVision with stride 2 and no newline.

transformers (5.23) applies tiling whenever a sample contains exactly one image, and a
policy's first step shows one frame, so this module encodes frames itself with the same
steps as the multi-image branch rather than calling ``get_image_features``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn
from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
from transformers.image_utils import ChannelDimension, SizeDict

from gea.policy.configuration_gea import FRAME_POOL_MODES

# The PIL/numpy image processor, not `LlavaOnevisionImageProcessor`, because in transformers 5
# that class is the torchvision backend. GEA does not depend on torchvision: the builds that
# match torch 2.13.0 here are CUDA builds, and installing one breaks transformers imports.
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
    LlavaOnevisionImageProcessorPil,
)

ImageProcessor = LlavaOnevisionImageProcessorPil


def build_image_processor(image_size: int) -> ImageProcessor:
    """Build the PIL image processor for a vision tower of `image_size` pixels."""
    return ImageProcessor(
        size={"height": image_size, "width": image_size},
        image_grid_pinpoints=[[image_size, image_size]],
    )


def tokens_per_frame(config: LlavaOnevisionConfig, frame_pool_stride: int, frame_newline: bool) -> int:
    """Return the number of image tokens one frame costs in the prompt (see the module docstring)."""
    vision = config.vision_config
    grid = vision.image_size // vision.patch_size
    pooled = math.ceil(grid / frame_pool_stride)
    return pooled * pooled + (1 if frame_newline else 0)


def preprocess_frames(processor: ImageProcessor, frames: Sequence[np.ndarray]) -> torch.Tensor:
    """Turn HxWx3 uint8 frames into pixel values of shape ``(num_frames, 3, size, size)``.

    The steps are those of the processor's multi-image branch: pad to a square with the
    mean color, resize, rescale to [0, 1], normalize. The output equals the processor's
    bit for bit. Frames that already have the processor's size skip padding and resizing,
    which PIL would leave unchanged, and rescaling and normalization run once on the whole
    stack, with the same float64-then-float32 arithmetic as the processor.
    """
    if not frames:
        raise ValueError("preprocess_frames got no frames; pass at least one HxWx3 uint8 image.")
    height, width = processor.size["height"], processor.size["width"]
    resized = []
    for frame in frames:
        if frame.ndim != 3 or frame.shape[-1] != 3:
            raise ValueError(f"Expected an HxWx3 RGB frame, got shape {frame.shape}.")
        if frame.dtype == np.uint8 and frame.shape[:2] == (height, width):
            resized.append(frame)
        else:
            resized.append(_pad_and_resize(processor, frame))
    # Channels-first before the float math: numpy broadcasts a per-channel constant over
    # contiguous H x W planes several times faster than over a trailing axis of 3.
    stack = np.ascontiguousarray(np.stack(resized).transpose(0, 3, 1, 2))
    # Same dtype steps as transformers' rescale (float64 product, cast to float32) and
    # normalize (float32 subtraction and division), so the result is identical.
    scaled = (stack.astype(np.float64) * processor.rescale_factor).astype(np.float32)
    mean = np.asarray(processor.image_mean, dtype=np.float32)[:, None, None]
    std = np.asarray(processor.image_std, dtype=np.float32)[:, None, None]
    return torch.from_numpy((scaled - mean) / std)


def _pad_and_resize(processor: ImageProcessor, frame: np.ndarray) -> np.ndarray:
    """Pad `frame` to a square with the mean color and resize it with PIL; return it channels-last."""
    size = SizeDict(height=processor.size["height"], width=processor.size["width"])
    background = tuple(int(channel * 255) for channel in processor.image_mean)
    image = processor.process_image(frame, do_convert_rgb=False, input_data_format=ChannelDimension.LAST)
    image = processor.pad_to_square(image, background_color=background)
    image = processor.resize(image=image, size=size, resample=processor.resample)
    return np.moveaxis(image, 0, -1)


def encode_frames(
    model: LlavaOnevisionForConditionalGeneration,
    pixel_values: torch.Tensor,
    frame_pool_stride: int,
    frame_newline: bool,
    frame_pool_mode: str = "bilinear",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode frames into image-token embeddings.

    Returns ``(tokens, features)``: `tokens` of shape ``(num_frames, tokens_per_frame, hidden)``
    go into the prompt in place of the image placeholders. `features`, of shape
    ``(num_frames, hidden)``, are the projector outputs averaged over each frame's patches,
    which the value head reads.
    """
    inner = model.model
    config = model.config
    pixel_values = pixel_values.to(device=model.device, dtype=inner.vision_tower.dtype)
    outputs = inner.vision_tower(pixel_values, output_hidden_states=True, return_dict=True)
    layer = config.vision_feature_layer
    if isinstance(layer, int):
        selected = outputs.hidden_states[layer]
    else:
        selected = torch.cat([outputs.hidden_states[index] for index in layer], dim=-1)
    if config.vision_feature_select_strategy == "default":
        selected = selected[:, 1:]
    patches = inner.multi_modal_projector(selected)
    patches = pool_patches(patches, frame_pool_stride, frame_pool_mode)
    features = patches.mean(dim=1)
    if frame_newline:
        newline = inner.image_newline.to(patches.dtype)[None, None, :].expand(patches.shape[0], 1, -1)
        patches = torch.cat([patches, newline], dim=1)
    return patches, features


def pool_patches(patches: torch.Tensor, stride: int, mode: str = "bilinear") -> torch.Tensor:
    """Downsample a square patch grid of shape ``(frames, grid * grid, hidden)`` by `stride`.

    ``"bilinear"`` interpolates, as LLaVA-OneVision pools video frames, which at stride 2
    averages each 2 x 2 block. ``"max"`` keeps each feature's maximum over the block,
    so a detail that covers one patch is not diluted by its three neighbors.
    """
    if mode not in FRAME_POOL_MODES:
        raise ValueError(f"Unknown frame pool mode {mode!r}; use one of {list(FRAME_POOL_MODES)}.")
    if stride == 1:
        return patches
    num_frames, num_patches, hidden = patches.shape
    grid = math.isqrt(num_patches)
    if grid * grid != num_patches:
        raise ValueError(f"Cannot pool {num_patches} patches: the count is not a square grid.")
    image = patches.view(num_frames, grid, grid, hidden).permute(0, 3, 1, 2)  # (frames, hidden, grid, grid)
    pooled_size = math.ceil(grid / stride)
    if mode == "max":
        image = nn.functional.adaptive_max_pool2d(image, pooled_size)
    else:
        image = nn.functional.interpolate(image, size=[pooled_size, pooled_size], mode="bilinear")
    return image.permute(0, 2, 3, 1).reshape(num_frames, pooled_size * pooled_size, hidden)
