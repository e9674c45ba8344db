"""CAMPPlus: S3Gen's speaker encoder, 16 kHz waveform -> 192-d x-vector.

Front end: Kaldi-style log filterbank (80 bins, 25 ms povey windows every 10 ms, no dither), minus its mean over
the utterance. Network: a small 2-D ResNet over (frequency, time) that folds frequency into channels, a strided
TDNN layer, three densely connected blocks of context-aware-masked TDNN layers with transition layers between
them, mean+std statistics pooling over time and a linear projection with a non-affine batch norm.

Batch norms run in eval mode on their running statistics, as the checkpoint holds them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import features


@dataclass(frozen=True)
class CAMPPlusConfig:
    sample_rate: int = 16000
    feat_dim: int = 80  # fbank bins
    head_channels: int = 32
    init_channels: int = 128  # after the first TDNN layer
    growth_rate: int = 32  # channels each dense layer adds
    bottleneck: int = 128  # = bn_size 4 x growth rate
    # (layers, kernel, dilation) of each dense block
    blocks: tuple[tuple[int, int, int], ...] = ((12, 3, 1), (24, 3, 2), (16, 3, 2))
    segment: int = 100  # frames per segment in the CAM context pooling
    embedding_size: int = 192

    @property
    def head_out_channels(self) -> int:
        return self.head_channels * (self.feat_dim // 8)  # 320


def kaldi_fbank(wav16k: Tensor, num_bins: int = 80, sample_rate: int = 16000) -> Tensor:
    """(L,) 16 kHz waveform (not scaled to int16) -> (frames, num_bins) log filterbank minus its mean over frames.

    The reference's torchaudio.compliance.kaldi.fbank(wav, num_mel_bins=80, dither=0) with its defaults: 25 ms povey
    windows, 10 ms hop, snip_edges, pre-emphasis 0.97, DC removal, power spectrum, bins from 20 Hz to Nyquist
    (reimplemented in ..features, so no torchaudio is needed).
    """
    feats = features.kaldi_fbank(wav16k.reshape(-1), num_mel_bins=num_bins, sample_rate=float(sample_rate))
    return feats - feats.mean(dim=0, keepdim=True)


# ---- head: 2-D ResNet over (frequency, time) ----

class BasicBlock2d(nn.Module):
    """Two 3x3 convs with batch norm and a residual; stride applies to frequency only."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = (nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=(stride, 1), bias=False),
                                       nn.BatchNorm2d(out_ch))
                         if stride != 1 or in_ch != out_ch else None)

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class FrequencyHead(nn.Module):
    """(B, F, T) -> (B, C * F/8, T): conv, two stride-2 res stages, a stride-2 conv, frequency folded into channels."""

    def __init__(self, cfg: CAMPPlusConfig):
        super().__init__()
        c = cfg.head_channels
        self.conv1 = nn.Conv2d(1, c, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.layer1 = nn.Sequential(BasicBlock2d(c, c, 2), BasicBlock2d(c, c, 1))
        self.layer2 = nn.Sequential(BasicBlock2d(c, c, 2), BasicBlock2d(c, c, 1))
        self.conv2 = nn.Conv2d(c, c, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x[:, None])))  # (B, C, F, T)
        x = self.layer2(self.layer1(x))  # (B, C, F/4, T)
        x = F.relu(self.bn2(self.conv2(x)))  # (B, C, F/8, T)
        B, C, Fr, T = x.shape
        return x.reshape(B, C * Fr, T)


# ---- TDNN body ----

class BatchNormReLU(nn.Module):
    def __init__(self, channels: int, relu: bool = True, affine: bool = True):
        super().__init__()
        self.batchnorm = nn.BatchNorm1d(channels, affine=affine)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        x = self.batchnorm(x)
        return F.relu(x) if self.relu else x


class TDNN(nn.Module):
    """Conv1d (no bias) then batch norm + ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int):
        super().__init__()
        self.linear = nn.Conv1d(in_ch, out_ch, kernel, stride=stride, padding=(kernel - 1) // 2, bias=False)
        self.nonlinear = BatchNormReLU(out_ch)

    def forward(self, x: Tensor) -> Tensor:
        return self.nonlinear(self.linear(x))


class CAMLayer(nn.Module):
    """Context-aware masking: a local conv gated by a sigmoid mask from utterance + segment mean context."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, dilation: int, segment: int):
        super().__init__()
        self.linear_local = nn.Conv1d(in_ch, out_ch, kernel, dilation=dilation,
                                      padding=(kernel - 1) // 2 * dilation, bias=False)
        self.linear1 = nn.Conv1d(in_ch, in_ch // 2, 1)
        self.linear2 = nn.Conv1d(in_ch // 2, out_ch, 1)
        self.segment = segment

    def _segment_means(self, x: Tensor) -> Tensor:
        # (B, C, T): the mean of each run of `segment` frames (the last run may be short), repeated over its frames
        means = F.avg_pool1d(x, self.segment, self.segment, ceil_mode=True)  # (B, C, ceil(T / segment))
        return means.repeat_interleave(self.segment, dim=-1)[..., : x.shape[-1]]

    def forward(self, x: Tensor) -> Tensor:
        local = self.linear_local(x)  # (B, out, T)
        context = x.mean(-1, keepdim=True) + self._segment_means(x)  # (B, in, T)
        mask = torch.sigmoid(self.linear2(F.relu(self.linear1(context))))
        return local * mask


class DenseTDNNLayer(nn.Module):
    """BN-ReLU, 1x1 bottleneck, BN-ReLU, CAM layer: adds growth_rate channels."""

    def __init__(self, in_ch: int, cfg: CAMPPlusConfig, kernel: int, dilation: int):
        super().__init__()
        self.nonlinear1 = BatchNormReLU(in_ch)
        self.linear1 = nn.Conv1d(in_ch, cfg.bottleneck, 1, bias=False)
        self.nonlinear2 = BatchNormReLU(cfg.bottleneck)
        self.cam_layer = CAMLayer(cfg.bottleneck, cfg.growth_rate, kernel, dilation, cfg.segment)

    def forward(self, x: Tensor) -> Tensor:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class DenseBlock(nn.ModuleDict):
    """Layers tdnnd1..N, each fed the concatenation of the block input and all earlier layers' outputs."""

    def __init__(self, in_ch: int, cfg: CAMPPlusConfig, layers: int, kernel: int, dilation: int):
        super().__init__({f"tdnnd{i + 1}": DenseTDNNLayer(in_ch + i * cfg.growth_rate, cfg, kernel, dilation)
                          for i in range(layers)})

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.values():
            x = torch.cat([x, layer(x)], dim=1)
        return x


class TransitLayer(nn.Module):
    """BN-ReLU then a 1x1 conv (no bias) that halves the channels."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.nonlinear = BatchNormReLU(in_ch)
        self.linear = nn.Conv1d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.nonlinear(x))


class Projection(nn.Module):
    """(B, 2C) pooled statistics -> (B, E): 1x1 conv (no bias), batch norm without affine parameters."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.linear = nn.Conv1d(in_ch, out_ch, 1, bias=False)
        self.nonlinear = BatchNormReLU(out_ch, relu=False, affine=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.nonlinear(self.linear(x[..., None])[..., 0])


class XVectorBody(nn.Module):
    def __init__(self, cfg: CAMPPlusConfig):
        super().__init__()
        self.tdnn = TDNN(cfg.head_out_channels, cfg.init_channels, 5, stride=2)
        channels = cfg.init_channels
        for i, (layers, kernel, dilation) in enumerate(cfg.blocks, start=1):
            self.add_module(f"block{i}", DenseBlock(channels, cfg, layers, kernel, dilation))
            channels += layers * cfg.growth_rate
            self.add_module(f"transit{i}", TransitLayer(channels, channels // 2))
            channels //= 2
        self.out_nonlinear = BatchNormReLU(channels)
        self.dense = Projection(2 * channels, cfg.embedding_size)
        self.n_blocks = len(cfg.blocks)

    def forward(self, x: Tensor) -> Tensor:
        # (B, 320, T) -> (B, E)
        x = self.tdnn(x)  # (B, 128, T/2)
        for i in range(1, self.n_blocks + 1):
            x = getattr(self, f"transit{i}")(getattr(self, f"block{i}")(x))
        x = self.out_nonlinear(x)  # (B, 512, T/2)
        stats = torch.cat([x.mean(dim=-1), x.std(dim=-1, unbiased=True)], dim=-1)  # (B, 1024)
        return self.dense(stats)


class CAMPPlus(nn.Module):
    """Speaker encoder. ``xvector(wav16k)`` is the whole path; ``features`` and ``forward`` are its two halves."""

    def __init__(self, cfg: CAMPPlusConfig = CAMPPlusConfig()):
        super().__init__()
        self.cfg = cfg
        self.head = FrequencyHead(cfg)
        # The checkpoint names the body "xvector", which is also the name of the public method below: register
        # the submodule directly (add_module refuses a name the class already has) and reach it as self.body.
        self._modules["xvector"] = XVectorBody(cfg)

    @property
    def body(self) -> XVectorBody:
        return self._modules["xvector"]

    def features(self, wav16k: Tensor) -> Tensor:
        """(L,) or (B, L) 16 kHz waveform -> (B, frames, 80) mean-normalized fbank (float32), one row per utterance."""
        wav16k = wav16k.float()
        rows = wav16k.reshape(-1, wav16k.shape[-1])
        return torch.stack([kaldi_fbank(row, self.cfg.feat_dim, self.cfg.sample_rate) for row in rows])

    @torch.inference_mode()
    def forward(self, feats: Tensor) -> Tensor:
        """(B, frames, 80) features -> (B, 192) x-vectors."""
        x = self.head(feats.transpose(1, 2))  # (B, 320, frames)
        return self.body(x)

    @torch.inference_mode()
    def xvector(self, wav16k: Tensor) -> Tensor:
        """(1, L) or (L,) 16 kHz waveform -> (1, 192) x-vector; (B, L) of equal-length utterances gives (B, 192).

        Features are computed in float32 on the model's device, then cast to the model's dtype.
        """
        param = next(self.parameters())
        feats = self.features(wav16k.to(param.device))
        return self.forward(feats.to(param.dtype))
