"""Reference attention: the denoising UNet's spatial self-attention also looks at the reference portrait's features.

The reference UNet runs once on the portrait's latent (timestep 0, the same text). In each of its transformer blocks a
writer processor records the self-attention input (the block's `norm1` output) as that block's *bank*. In the
denoising UNet, a reader processor on the transformer block at the same module path (the official pairing) then
attends with its own tokens as queries and, as keys/values:

- `mode="concat"` (official): `[own tokens, bank tokens]`, concatenated along the token axis;
- `mode="add"` (the paper's wording, "element-wise sum"): `own tokens + bank tokens`, i.e. the frame-broadcast bank
  is added to the normed tokens, and the sum is the query, key and value source. The bank has as many tokens as a
  frame at the same resolution, so this needs no resampling.

Every frame of a video sees the same bank. With classifier-free guidance (`uncond_first_half`), the first half of the
batch (the unconditional videos) attends without the bank, as the official sampler does: its guidance scale then
amplifies the reference conditioning.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn

FusionMode = Literal["concat", "add"]


def transformer_blocks(unet: nn.Module) -> dict[str, BasicTransformerBlock]:
    """A UNet's spatial transformer blocks by module path, e.g. `down_blocks.0.attentions.0.transformer_blocks.0`."""
    return {path: module for path, module in unet.named_modules() if isinstance(module, BasicTransformerBlock)}


class ReferenceWriterProcessor:
    """Self-attention processor that records its input (the reference features) before computing plain attention."""

    def __init__(self) -> None:
        self.attention = AttnProcessor2_0()
        self.bank: torch.Tensor | None = None

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self.bank = hidden_states
        return self.attention(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class ReferenceReaderProcessor:
    """Self-attention processor that fuses a stored reference bank into the attention (see the module docstring)."""

    def __init__(self, mode: FusionMode = "concat") -> None:
        self.attention = AttnProcessor2_0()
        self.mode = mode
        self._bank: torch.Tensor | None = None
        self._bank_keys_values: tuple[torch.Tensor, torch.Tensor] | None = None
        self.uncond_first_half = False

    @property
    def bank(self) -> torch.Tensor | None:
        return self._bank

    @bank.setter
    def bank(self, value: torch.Tensor | None) -> None:
        self._bank, self._bank_keys_values = value, None  # its key / value projections are made again

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.bank is None:
            return self.attention(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        if self.mode == "concat" and _plain_self_attention(attn, hidden_states, attention_mask):
            return self.concat_projected(attn, hidden_states)
        bank = self.bank_per_row(hidden_states)
        if not self.uncond_first_half:
            return self.fused_attention(attn, hidden_states, bank, attention_mask)
        rows = hidden_states.shape[0]
        if rows % 2:
            raise ValueError(f"Classifier-free guidance needs an even batch, got {rows} rows.")
        half = rows // 2
        mask_halves = (None, None) if attention_mask is None else (attention_mask[:half], attention_mask[half:])
        unconditional = self.attention(attn, hidden_states[:half], None, mask_halves[0], temb)
        conditional = self.fused_attention(attn, hidden_states[half:], bank[half:], mask_halves[1])
        return torch.cat([unconditional, conditional])

    def bank_per_row(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The bank `(b, L, C)` repeated for the rows `(b*F, L, C)` it serves; a batch-1 bank serves every row."""
        rows = hidden_states.shape[0]
        bank_rows = self.bank.shape[0]
        if rows % bank_rows:
            raise ValueError(f"A reference bank of batch {bank_rows} cannot serve {rows} frame rows.")
        # Promote the (fp16) bank back to the attention's precision, as the official concatenation does.
        return self.bank.to(hidden_states.dtype).repeat_interleave(rows // bank_rows, dim=0)

    def concat_projected(self, attn: Attention, hidden_states: torch.Tensor) -> torch.Tensor:
        """Concat fusion with the bank's keys and values projected once per bank, not once per frame and step: the
        same numbers as projecting ``[own tokens, bank tokens]`` (a projection acts on each token alone), without
        the repeated bank's projections (every frame of every window at every step sees the same bank)."""
        rows = hidden_states.shape[0]
        if rows % self.bank.shape[0] or (self.uncond_first_half and rows % 2):
            raise ValueError(f"A reference bank of batch {self.bank.shape[0]} cannot serve {rows} frame rows"
                             f"{' split in two CFG halves' if self.uncond_first_half else ''}.")
        half = rows // 2 if self.uncond_first_half else 0
        outputs = [self.attention(attn, hidden_states[:half])] if half else []
        own = hidden_states[half:]
        keys_values = self._bank_keys_values
        if keys_values is None or keys_values[0].dtype != own.dtype:
            bank = self.bank.to(own.dtype)  # the (fp16) bank promoted, as the official concatenation does
            keys_values = (attn.to_k(bank), attn.to_v(bank))
            if not torch.is_grad_enabled():  # training recomputes blocks (checkpointing): nothing kept there
                self._bank_keys_values = keys_values
        per_bank = rows // self.bank.shape[0]
        bank_keys, bank_values = (tensor.repeat_interleave(per_bank, dim=0)[half:] for tensor in keys_values)
        keys = torch.cat([attn.to_k(own), bank_keys], dim=1)
        values = torch.cat([attn.to_v(own), bank_values], dim=1)
        outputs.append(attend_projected(attn, attn.to_q(own), keys, values))
        return torch.cat(outputs) if len(outputs) > 1 else outputs[0]

    def fused_attention(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        bank: torch.Tensor,
        attention_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        if self.mode == "concat":
            context = torch.cat([hidden_states, bank], dim=1)
            return self.attention(attn, hidden_states, context, attention_mask)
        if bank.shape != hidden_states.shape:
            raise ValueError(f"mode='add' needs a bank shaped like the tokens {tuple(hidden_states.shape)}, got "
                             f"{tuple(bank.shape)}.")  # fmt: skip
        return self.attention(attn, hidden_states + bank, None, attention_mask)


def _plain_self_attention(attn: Attention, hidden_states: torch.Tensor, mask: torch.Tensor | None) -> bool:
    """An SD-1.5 self-attention (tokens in, no norms or residual inside, no mask): the projected fast path applies."""
    return (hidden_states.ndim == 3 and mask is None and attn.spatial_norm is None and attn.group_norm is None
            and attn.norm_cross is None and getattr(attn, "norm_q", None) is None
            and getattr(attn, "norm_k", None) is None and not attn.residual_connection
            and attn.rescale_output_factor == 1.0)


def attend_projected(attn: Attention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Multi-head SDPA on projected tokens `(B, N, C)`, then the output projection (``AttnProcessor2_0``'s steps)."""
    batch, head_dim = query.shape[0], key.shape[-1] // attn.heads
    query, key, value = (tensor.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
                         for tensor in (query, key, value))
    hidden = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
    hidden = hidden.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
    return attn.to_out[1](attn.to_out[0](hidden))


class ReferenceFusion:
    """Wires a reference UNet to a denoising UNet for reference attention.

    Args:
        reference_unet (`nn.Module`): the reference UNet (`ReferenceUNet2DConditionModel`); writer processors are put
            on the self-attention of each of its transformer blocks.
        denoising_unet (`nn.Module`): the denoising UNet (`UNet3DConditionModel`); reader processors go on the blocks
            at the same module paths (both UNets must have the same transformer blocks).
        mode (`"concat"` or `"add"`, *optional*, defaults to `"concat"`): how the bank enters self-attention.
        bank_dtype (`torch.dtype`, *optional*, defaults to `torch.float16`): the banks are rounded to this dtype when
            handed to the readers, as the official code does even in fp32 (`None` keeps them as they are).

    Use: `write(reference_latents, text)` once per reference, then run the denoising UNet any number of times; set
    `uncond_first_half = True` when the batch is `[unconditional, conditional]`; `clear()` forgets the banks;
    `detach()` puts the original processors back.
    """

    def __init__(
        self,
        reference_unet: nn.Module,
        denoising_unet: nn.Module,
        mode: FusionMode = "concat",
        bank_dtype: torch.dtype | None = torch.float16,
    ):
        if mode not in ("concat", "add"):
            raise ValueError(f"mode must be 'concat' or 'add', got {mode!r}.")
        writer_blocks = transformer_blocks(reference_unet)
        reader_blocks = transformer_blocks(denoising_unet)
        if not writer_blocks or writer_blocks.keys() != reader_blocks.keys():
            unmatched = sorted(writer_blocks.keys() ^ reader_blocks.keys())
            raise ValueError(f"The two UNets' transformer blocks do not pair up by module path: {unmatched[:8]}.")
        self.reference_unet = reference_unet
        self.bank_dtype = bank_dtype
        self._uncond_first_half = False
        self._original_processors = {}
        self.writers = {path: ReferenceWriterProcessor() for path in writer_blocks}
        self.readers = {path: ReferenceReaderProcessor(mode) for path in reader_blocks}
        for blocks, processors in ((writer_blocks, self.writers), (reader_blocks, self.readers)):
            for path, block in blocks.items():
                self._original_processors[block.attn1] = block.attn1.processor
                block.attn1.set_processor(processors[path])

    @property
    def uncond_first_half(self) -> bool:
        """True when the first half of the denoising batch is the unconditional (no reference) half."""
        return self._uncond_first_half

    @uncond_first_half.setter
    def uncond_first_half(self, value: bool) -> None:
        self._uncond_first_half = value
        for reader in self.readers.values():
            reader.uncond_first_half = value

    def write(self, reference_latents: torch.Tensor, encoder_hidden_states: torch.Tensor) -> None:
        """Runs the reference UNet at timestep 0 and hands each block's bank to its reader.

        Args:
            reference_latents (`torch.Tensor` of shape `(b, 4, h, w)`): the portrait's scaled VAE latent; `b` is 1 or
                the denoising batch (e.g. duplicated for classifier-free guidance).
            encoder_hidden_states (`torch.Tensor` of shape `(b, 77, D)`): the text embeddings.
        """
        timestep = torch.zeros(reference_latents.shape[0], dtype=torch.long, device=reference_latents.device)
        self.reference_unet(reference_latents, timestep, encoder_hidden_states, return_dict=False)
        for path, reader in self.readers.items():
            bank = self.writers[path].bank
            reader.bank = bank if self.bank_dtype is None else bank.to(self.bank_dtype)

    def reference_banks(self) -> dict[str, torch.Tensor]:
        """The banks as the reference UNet wrote them (before the `bank_dtype` rounding), by module path."""
        return {path: writer.bank for path, writer in self.writers.items() if writer.bank is not None}

    def clear(self) -> None:
        """Forgets the banks: the denoising UNet attends without the reference until the next `write`."""
        for processor in (*self.writers.values(), *self.readers.values()):
            processor.bank = None

    def detach(self) -> None:
        """Restores both UNets' original self-attention processors."""
        self.clear()
        for attention, processor in self._original_processors.items():
            attention.set_processor(processor)
        self._original_processors = {}
