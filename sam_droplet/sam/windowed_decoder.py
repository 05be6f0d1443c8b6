"""SAM's mask decoder, computed for many prompts on one image without repeating shared work.

This is an exact re-arrangement of ``MaskDecoder.predict_masks`` (segment-anything and MobileSAM
have the same decoder) for the case the droplet pipeline runs: many box/point prompts, no mask
prompt, one image. Two things are computed once instead of once per prompt, and one is cut to
what is needed:

1. Without a mask prompt, every prompt adds the same "no mask" embedding to the image embedding,
   so the first transformer layer's image-side projections (keys and values of the token-to-image
   attention, queries of the image-to-token attention) are the same for every prompt.
2. The output upscaling (two stride-2, kernel-2 transposed convolutions with a per-pixel layer
   norm) is local: each low-resolution mask pixel depends on one image-embedding cell. It is
   therefore run only on each prompt's window around its box, not on the full 256 x 256 grid.

The outputs equal the stock decoder's (tests compare them) up to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["SharedImage", "WindowedDecoder"]


@dataclass
class SharedImage:
    """Per-image tensors shared by every prompt (batch dimension 1)."""

    src: torch.Tensor  # (1, HW, C) image embedding + no-mask embedding
    pe: torch.Tensor  # (1, HW, C) dense positional encoding
    keys1_q: torch.Tensor  # (1, heads, HW, c) layer-1 image-to-token queries
    keys1_k: torch.Tensor  # (1, heads, HW, c) layer-1 token-to-image keys
    keys1_v: torch.Tensor  # (1, heads, HW, c) layer-1 token-to-image values
    grid: tuple[int, int]  # (h, w) of the embedding grid (64, 64)


def _heads(x: torch.Tensor, n: int) -> torch.Tensor:
    b, t, c = x.shape
    return x.reshape(b, t, n, c // n).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, n, t, c = x.shape
    return x.transpose(1, 2).reshape(b, t, n * c)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(c)) v on heads; a batch of 1 is broadcast to the other's batch.

    PyTorch's fused attention computes the same as SAM's explicit softmax (to float rounding)
    and is about 1.5 times faster on a CPU.
    """
    b = max(q.shape[0], k.shape[0])
    if q.shape[0] != b:
        q = q.expand(b, -1, -1, -1)
    if k.shape[0] != b:
        k, v = k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v)


def _attention(layer: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SAM's ``Attention`` module (projections, heads, attention, output projection)."""
    n = layer.num_heads
    return layer.out_proj(
        _merge(_attend(_heads(layer.q_proj(q), n), _heads(layer.k_proj(k), n), _heads(layer.v_proj(v), n)))
    )


class WindowedDecoder:
    """Batched, windowed evaluation of a SAM model's mask decoder.

    Args:
        sam: a segment-anything / MobileSAM ``Sam`` module (eval mode).
    """

    def __init__(self, sam: Any):
        self.sam = sam
        self.md = sam.mask_decoder
        self.tf = self.md.transformer
        if len(self.tf.layers) != 2:
            raise ValueError("the windowed decoder expects SAM's two-layer two-way transformer")

    # -- per image -----------------------------------------------------------------------------

    def share(self, image_embeddings: torch.Tensor) -> SharedImage:
        """Compute the prompt-independent part of the decoder for one image (1, C, h, w)."""
        pe_grid = self.sam.prompt_encoder.get_dense_pe()
        no_mask = self.sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        src = (image_embeddings + no_mask).flatten(2).permute(0, 2, 1)
        pe = pe_grid.flatten(2).permute(0, 2, 1).to(src.dtype)
        layer1 = self.tf.layers[0]
        t2i, i2t = layer1.cross_attn_token_to_image, layer1.cross_attn_image_to_token
        k = src + pe
        return SharedImage(
            src=src,
            pe=pe,
            keys1_q=_heads(i2t.q_proj(k), i2t.num_heads),
            keys1_k=_heads(t2i.k_proj(k), t2i.num_heads),
            keys1_v=_heads(t2i.v_proj(src), t2i.num_heads),
            grid=(int(image_embeddings.shape[-2]), int(image_embeddings.shape[-1])),
        )

    # -- per batch of prompts --------------------------------------------------------------------

    def transformer(self, shared: SharedImage, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two-way transformer; returns (tokens out (B, T, C), image keys out (B, HW, C))."""
        tf = self.tf
        l1, l2 = tf.layers
        query_pe = tokens
        # Layer 1 (no positional encoding on the first self-attention, as in SAM).
        queries = l1.norm1(l1.self_attn(q=tokens, k=tokens, v=tokens))
        a = l1.cross_attn_token_to_image
        q = _heads(a.q_proj(queries + query_pe), a.num_heads)
        queries = l1.norm2(queries + a.out_proj(_merge(_attend(q, shared.keys1_k, shared.keys1_v))))
        queries = l1.norm3(queries + l1.mlp(queries))
        a = l1.cross_attn_image_to_token
        tq = queries + query_pe
        k = _heads(a.k_proj(tq), a.num_heads)
        v = _heads(a.v_proj(queries), a.num_heads)
        keys = l1.norm4(shared.src + a.out_proj(_merge(_attend(shared.keys1_q, k, v))))
        # Layer 2 and the final token-to-image attention: everything depends on the prompt now.
        # (As SAM's TwoWayAttentionBlock, with ``keys + pe`` computed once per layer.)
        q = queries + query_pe
        queries = l2.norm1(queries + _attention(l2.self_attn, q, q, queries))
        k = keys + shared.pe
        queries = l2.norm2(queries + _attention(l2.cross_attn_token_to_image, queries + query_pe, k, keys))
        queries = l2.norm3(queries + l2.mlp(queries))
        keys = l2.norm4(keys + _attention(l2.cross_attn_image_to_token, k, queries + query_pe, queries))
        k = keys + shared.pe
        queries = tf.norm_final_attn(queries + _attention(tf.final_attn_token_to_image, queries + query_pe, k, keys))
        return queries, keys

    def decode(
        self, shared: SharedImage, sparse: torch.Tensor, windows: torch.Tensor, size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode prompts; low-resolution logits only inside each prompt's window.

        Args:
            shared: from :meth:`share`.
            sparse: (B, T, C) sparse prompt embeddings (points and boxes).
            windows: (B, 2) integer (row, col) of each window's top-left cell on the embedding
                grid; windows are ``size`` x ``size`` cells and lie inside the grid.
            size: window side in embedding cells.

        Returns:
            Logits (B, 3, 4 * size, 4 * size) of the three multimask outputs in each window (one
            embedding cell is 4 x 4 low-resolution mask pixels), and predicted IoUs (B, 3).
        """
        md = self.md
        b = sparse.shape[0]
        out_tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1).to(sparse.dtype), sparse], dim=1)
        hs, keys = self.transformer(shared, tokens)
        iou = md.iou_prediction_head(hs[:, 0, :])
        mask_tokens = hs[:, 1 : 1 + md.num_mask_tokens, :]
        # Gather each prompt's window of the image keys: (B, C, size, size).
        w = shared.grid[1]
        rows = windows[:, 0:1] + torch.arange(size, device=keys.device)[None, :]  # (B, size)
        cols = windows[:, 1:2] + torch.arange(size, device=keys.device)[None, :]
        flat = (rows[:, :, None] * w + cols[:, None, :]).reshape(b, -1)  # (B, size*size)
        win = torch.gather(keys, 1, flat[:, :, None].expand(-1, -1, keys.shape[-1]))
        win = win.transpose(1, 2).reshape(b, -1, size, size)
        up = md.output_upscaling(win)  # (B, C/8, 4 size, 4 size)
        hyper = torch.stack(
            [md.output_hypernetworks_mlps[i](mask_tokens[:, i, :]) for i in range(md.num_mask_tokens)], dim=1
        )
        c = up.shape[1]
        masks = (hyper @ up.reshape(b, c, -1)).reshape(b, -1, up.shape[-2], up.shape[-1])
        # Multimask output: the three disambiguated masks (token 0 is the single-mask output).
        return masks[:, 1:], iou[:, 1:]


def stock_low_res(sam: Any, image_embeddings: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor):
    """The stock decoder's multimask low-resolution logits (B, 3, 256, 256) and IoUs (for tests)."""
    return sam.mask_decoder(
        image_embeddings=image_embeddings,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=True,
    )
