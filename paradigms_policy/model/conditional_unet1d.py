"""ConditionalUnet1D: DiffusionPolicy's temporal U-Net noise-prediction network.

Module and parameter names follow DiffusionPolicy (real-stanford/diffusion_policy) so its
checkpoints load with ``strict=True``. Layout conventions inside the network are
channels-first ``[B, C, T]``; the public interface is ``[B, T, input_dim]``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

__all__ = [
    "SinusoidalPosEmb",
    "Conv1dBlock",
    "Downsample1d",
    "Upsample1d",
    "ConditionalResidualBlock1D",
    "ConditionalUnet1D",
]


class SinusoidalPosEmb(nn.Module):
    """Transformer-style sinusoidal embedding of the (scalar) diffusion step."""

    def __init__(self, dim: int):
        super().__init__()
        if dim < 4 or dim % 2:
            raise ValueError(f"SinusoidalPosEmb dim must be even and >= 4, got {dim}")
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        # t: [B] -> [B, dim] = [sin(t * f_k), cos(t * f_k)], f_k geometric from 1 to 1/10000
        half = self.dim // 2
        log_step = math.log(10000.0) / (half - 1)
        freqs = torch.exp(torch.arange(half, device=t.device) * -log_step)
        angles = t[:, None] * freqs[None, :]  # [B, half]
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class Conv1dBlock(nn.Module):
    """Conv1d -> GroupNorm -> Mish, length-preserving (odd kernel)."""

    def __init__(self, inp_channels: int, out_channels: int, kernel_size: int, n_groups: int = 8):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv1d(inp_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, out_channels),
            nn.Mish(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)  # [B, Cin, T] -> [B, Cout, T]


class Downsample1d(nn.Module):
    """Halve the time axis with a stride-2 convolution: [B, C, T] -> [B, C, ceil(T/2)]."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample1d(nn.Module):
    """Double the time axis with a transposed convolution: [B, C, T] -> [B, C, 2T]."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(dim, dim, kernel_size=4, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _AddTrailingAxis(nn.Module):
    """[B, C] -> [B, C, 1]; parameter-free (DiffusionPolicy uses einops Rearrange here)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(-1)


class ConditionalResidualBlock1D(nn.Module):
    """Two Conv1dBlocks with FiLM conditioning between them and a residual connection.

    The condition vector (step embedding + global features) is mapped to a per-channel bias,
    or to a per-channel scale and bias when ``cond_predict_scale`` is set.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        cond_dim: int,
        kernel_size: int = 3,
        n_groups: int = 8,
        cond_predict_scale: bool = False,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(
            [
                Conv1dBlock(in_channels, out_channels, kernel_size, n_groups=n_groups),
                Conv1dBlock(out_channels, out_channels, kernel_size, n_groups=n_groups),
            ]
        )
        self.cond_predict_scale = cond_predict_scale
        self.out_channels = out_channels
        film_channels = out_channels * 2 if cond_predict_scale else out_channels
        # indices 0/1/2 match DiffusionPolicy's Sequential(Mish, Linear, Rearrange)
        self.cond_encoder = nn.Sequential(
            nn.Mish(),
            nn.Linear(cond_dim, film_channels),
            _AddTrailingAxis(),
        )
        self.residual_conv = (
            nn.Conv1d(in_channels, out_channels, kernel_size=1)
            if in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        # x: [B, Cin, T], cond: [B, cond_dim] -> [B, Cout, T]
        out = self.blocks[0](x)
        film = self.cond_encoder(cond)  # [B, Cout or 2*Cout, 1]
        if self.cond_predict_scale:
            film = film.reshape(film.shape[0], 2, self.out_channels, 1)
            out = film[:, 0] * out + film[:, 1]
        else:
            out = out + film
        out = self.blocks[1](out)
        return out + self.residual_conv(x)


class ConditionalUnet1D(nn.Module):
    """Temporal U-Net predicting the diffusion model output for an action sequence.

    Each resolution level has two conditional residual blocks; the encoder halves the time
    axis between levels and the decoder doubles it back, with skip connections. Horizons must
    therefore be divisible by ``2 ** (len(down_dims) - 1)``.
    """

    def __init__(
        self,
        input_dim: int,
        local_cond_dim: int | None = None,
        global_cond_dim: int | None = None,
        diffusion_step_embed_dim: int = 256,
        down_dims: Sequence[int] = (256, 512, 1024),
        kernel_size: int = 5,
        n_groups: int = 8,
        cond_predict_scale: bool = False,
    ):
        super().__init__()
        down_dims = list(down_dims)
        if not down_dims:
            raise ValueError("down_dims must name at least one level")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd to preserve length, got {kernel_size}")
        self.input_dim = input_dim
        self.local_cond_dim = local_cond_dim
        self.global_cond_dim = global_cond_dim
        self.down_dims = tuple(down_dims)

        dsed = diffusion_step_embed_dim
        diffusion_step_encoder = nn.Sequential(
            SinusoidalPosEmb(dsed),
            nn.Linear(dsed, dsed * 4),
            nn.Mish(),
            nn.Linear(dsed * 4, dsed),
        )
        cond_dim = dsed + (global_cond_dim or 0)

        def res_block(c_in: int, c_out: int) -> ConditionalResidualBlock1D:
            return ConditionalResidualBlock1D(
                c_in,
                c_out,
                cond_dim=cond_dim,
                kernel_size=kernel_size,
                n_groups=n_groups,
                cond_predict_scale=cond_predict_scale,
            )

        all_dims = [input_dim] + down_dims
        in_out = list(zip(all_dims[:-1], all_dims[1:]))  # channel pairs per encoder level

        local_cond_encoder = None
        if local_cond_dim is not None:
            first_out = in_out[0][1]
            # [0] is added after the first encoder block; [1] exists for checkpoint parity only
            local_cond_encoder = nn.ModuleList(
                [res_block(local_cond_dim, first_out), res_block(local_cond_dim, first_out)]
            )

        down_modules = nn.ModuleList()
        for level, (c_in, c_out) in enumerate(in_out):
            is_last = level == len(in_out) - 1
            down_modules.append(
                nn.ModuleList(
                    [
                        res_block(c_in, c_out),
                        res_block(c_out, c_out),
                        Downsample1d(c_out) if not is_last else nn.Identity(),
                    ]
                )
            )

        mid_dim = all_dims[-1]
        mid_modules = nn.ModuleList([res_block(mid_dim, mid_dim), res_block(mid_dim, mid_dim)])

        # Decoder: one level per downsampling; every level upsamples (as in DiffusionPolicy).
        up_modules = nn.ModuleList()
        for c_in, c_out in reversed(in_out[1:]):
            up_modules.append(
                nn.ModuleList(
                    [
                        res_block(c_out * 2, c_in),  # input is concat(x, skip)
                        res_block(c_in, c_in),
                        Upsample1d(c_in),
                    ]
                )
            )

        start_dim = down_dims[0]
        # DiffusionPolicy builds this Conv1dBlock with its default 8 groups, whatever n_groups is.
        final_conv = nn.Sequential(
            Conv1dBlock(start_dim, start_dim, kernel_size=kernel_size),
            nn.Conv1d(start_dim, input_dim, kernel_size=1),
        )

        # Registration order matches DiffusionPolicy, so state_dict() lists keys in its order.
        self.mid_modules = mid_modules
        self.diffusion_step_encoder = diffusion_step_encoder
        self.local_cond_encoder = local_cond_encoder
        self.up_modules = up_modules
        self.down_modules = down_modules
        self.final_conv = final_conv

    @property
    def horizon_multiple(self) -> int:
        """Horizons must be a multiple of this (one halving per downsampling level)."""
        return 2 ** (len(self.down_dims) - 1)

    def _timesteps(self, timestep: torch.Tensor | int | float, batch: int, device) -> torch.Tensor:
        if not torch.is_tensor(timestep):
            return torch.full((batch,), timestep, device=device, dtype=torch.long)
        t = timestep.to(device)
        if t.ndim == 0:
            return t.expand(batch)
        if t.ndim != 1 or t.shape[0] not in (1, batch):
            raise ValueError(
                f"timestep must be an int, a 0-d tensor or a [B={batch}] tensor, got shape {tuple(t.shape)}"
            )
        return t.expand(batch)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        local_cond: torch.Tensor | None = None,
        global_cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """sample [B,T,input_dim], timestep int | [] | [B], local_cond [B,T,L], global_cond [B,G] -> [B,T,input_dim]."""
        self._check_inputs(sample, local_cond, global_cond)
        batch = sample.shape[0]
        x = sample.transpose(1, 2)  # [B, input_dim, T]

        timesteps = self._timesteps(timestep, batch, sample.device)
        cond = self.diffusion_step_encoder(timesteps)  # [B, dsed]
        if global_cond is not None:
            cond = torch.cat([cond, global_cond], dim=-1)  # [B, dsed + G]

        local_feat = None
        if local_cond is not None:
            # Only local_cond_encoder[0] affects the output: DiffusionPolicy's decoder-side
            # injection of encoder[1] never fires (its level index test is off by one) and the
            # shapes would not fit at that point, so trained checkpoints never used it.
            local_feat = self.local_cond_encoder[0](local_cond.transpose(1, 2), cond)  # [B, down_dims[0], T]

        skips = []
        for level, (res1, res2, downsample) in enumerate(self.down_modules):
            x = res1(x, cond)
            if level == 0 and local_feat is not None:
                x = x + local_feat
            x = res2(x, cond)
            skips.append(x)
            x = downsample(x)

        for mid in self.mid_modules:
            x = mid(x, cond)

        for level, (res1, res2, upsample) in enumerate(self.up_modules):
            x = torch.cat((x, skips.pop()), dim=1)  # [B, 2*C, T_level]
            x = res1(x, cond)
            x = res2(x, cond)
            x = upsample(x)

        x = self.final_conv(x)  # [B, input_dim, T]
        return x.transpose(1, 2)

    def _check_inputs(self, sample, local_cond, global_cond) -> None:
        if sample.ndim != 3 or sample.shape[-1] != self.input_dim:
            raise ValueError(
                f"sample must be [B, T, {self.input_dim}], got shape {tuple(sample.shape)}"
            )
        horizon = sample.shape[1]
        if horizon % self.horizon_multiple:
            raise ValueError(
                f"horizon {horizon} must be a multiple of {self.horizon_multiple} "
                f"for {len(self.down_dims)} U-Net levels"
            )
        if self.global_cond_dim is not None:
            if global_cond is None:
                raise ValueError(f"global_cond [B, {self.global_cond_dim}] is required")
            if tuple(global_cond.shape) != (sample.shape[0], self.global_cond_dim):
                raise ValueError(
                    f"global_cond must be [{sample.shape[0]}, {self.global_cond_dim}], "
                    f"got shape {tuple(global_cond.shape)}"
                )
        elif global_cond is not None:
            raise ValueError("global_cond given but the network was built with global_cond_dim=None")
        if local_cond is not None:
            if self.local_cond_encoder is None:
                raise ValueError("local_cond given but the network was built with local_cond_dim=None")
            expected = (sample.shape[0], horizon, self.local_cond_dim)
            if tuple(local_cond.shape) != expected:
                raise ValueError(f"local_cond must be {list(expected)}, got shape {tuple(local_cond.shape)}")
