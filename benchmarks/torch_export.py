"""The models of issue 15, built and exported the way PyTorch users do.

torchvision's small vision nets at 96x96 (10 classes), a Conv1d DS-CNN, a small
vision transformer (patch 8, width 64, 3 blocks, 32x32 input) and a keyword
transformer (KWT-style: one token per MFCC frame), with random weights and
BatchNorm statistics re-estimated on random data, exported with both of
torch.onnx's exporters (TorchScript: ``dynamo=False``; ``dynamo=True``) at
opsets 13 and 17.

Needs the optional extra ``pip install -e .[torch]`` (torch, torchvision,
onnxscript); nothing in the default install or the test suite imports this file.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

OPSETS = (13, 17)
EXPORTERS = ("torchscript", "dynamo")


def _torch():
    import torch

    torch.manual_seed(0)
    return torch


def _dscnn(torch):
    nn = torch.nn

    class DSCNN1d(nn.Module):
        """Keyword spotting on 49 frames x 10 MFCCs, convolutions along time."""

        def __init__(self, classes=12, width=64, blocks=4):
            super().__init__()
            layers = [nn.Conv1d(10, width, 5, stride=2, padding=2), nn.BatchNorm1d(width), nn.ReLU()]
            for _ in range(blocks):
                layers += [nn.Conv1d(width, width, 3, padding=1, groups=width), nn.BatchNorm1d(width), nn.ReLU(),
                           nn.Conv1d(width, width, 1), nn.BatchNorm1d(width), nn.ReLU()]
            self.features = nn.Sequential(*layers)
            self.fc = nn.Linear(width, classes)

        def forward(self, x):
            return self.fc(self.features(x).mean(dim=2))

    return DSCNN1d(), (1, 10, 49)


def _transformer_blocks(torch, width, depth, heads, mlp):
    nn = torch.nn

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.heads = heads
            self.qkv = nn.Linear(width, 3 * width)
            self.proj = nn.Linear(width, width)

        def forward(self, x):
            b, n, c = x.shape
            qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(c // self.heads))
            att = att.softmax(dim=-1)
            return self.proj((att @ v).transpose(1, 2).reshape(b, n, c))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1 = nn.LayerNorm(width)
            self.attn = Attention()
            self.norm2 = nn.LayerNorm(width)
            self.mlp = nn.Sequential(nn.Linear(width, mlp), nn.GELU(), nn.Linear(mlp, width))

        def forward(self, x):
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    return nn.Sequential(*[Block() for _ in range(depth)])


def _token_transformer(torch, embed, tokens, classes, width, depth, heads):
    """``embed`` (input -> [batch, tokens, width]), a class token, learned positions,
    the blocks, a final LayerNorm and a linear head on the class token."""
    nn = torch.nn

    class TokenTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = embed
            self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.02)
            self.pos = nn.Parameter(torch.randn(1, tokens + 1, width) * 0.02)
            self.blocks = _transformer_blocks(torch, width, depth, heads, 2 * width)
            self.norm = nn.LayerNorm(width)
            self.head = nn.Linear(width, classes)

        def forward(self, x):
            x = self.embed(x)
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
            x = self.norm(self.blocks(x))
            return self.head(x[:, 0])

    return TokenTransformer()


def _vit(torch):
    """Patch 8 on 32x32x3: 16 tokens and a class token, width 64, 3 blocks of 4 heads."""
    nn = torch.nn

    class PatchEmbed(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 64, 8, stride=8)

        def forward(self, x):
            return self.conv(x).flatten(2).transpose(1, 2)

    return _token_transformer(torch, PatchEmbed(), 16, 10, 64, 3, 4), (1, 3, 32, 32)


def _kwt(torch):
    """Keyword transformer: each of 49 MFCC frames (10 coefficients) is a token;
    width 64, 2 blocks of 2 heads."""
    return _token_transformer(torch, torch.nn.Linear(10, 64), 49, 12, 64, 2, 2), (1, 49, 10)


def _torchvision(name):
    def make(torch):
        import torchvision.models as tvm

        if name == "mobilenet_v2":
            return tvm.mobilenet_v2(width_mult=0.35, num_classes=10), (1, 3, 96, 96)
        return getattr(tvm, name)(num_classes=10), (1, 3, 96, 96)

    return make


MODELS = {
    "mobilenet_v3_small": _torchvision("mobilenet_v3_small"),
    "shufflenet_v2_x0_5": _torchvision("shufflenet_v2_x0_5"),
    "mnasnet0_5": _torchvision("mnasnet0_5"),
    "squeezenet1_1": _torchvision("squeezenet1_1"),
    "mobilenet_v2_035": _torchvision("mobilenet_v2"),
    "dscnn_conv1d": _dscnn,
    "vit_p8_w64": _vit,
    "kwt_w64": _kwt,
}


def sample_inputs(shape, n, seed):
    """Inputs for calibration and evaluation: smooth random fields (neighbouring
    pixels / frames correlated, as in images and spectrograms), unit variance."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *shape[1:])).astype(np.float32)
    for axis in range(2, x.ndim):  # a running average along each spatial / time axis
        x = (x + np.roll(x, 1, axis=axis) + np.roll(x, -1, axis=axis)) / np.float32(math.sqrt(3))
    return x.astype(np.float32)


def build_model(name):
    """The float torch module of ``name`` (eval mode) and its input shape, with
    BatchNorm statistics re-estimated on random data (random weights leave the
    running statistics at 0 / 1, which makes a net whose activations explode)."""
    torch = _torch()
    model, shape = MODELS[name](torch)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if bns:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches
        model.train()
        with torch.no_grad():
            for k in range(8):
                model(torch.from_numpy(sample_inputs((16, *shape[1:]), 16, seed=100 + k)))
    model.eval()
    return model, shape


def export(name, exporter, opset, out_dir: Path) -> Path:
    """Export ``name`` with one exporter at one opset; returns the .onnx path."""
    torch = _torch()
    model, shape = build_model(name)
    path = Path(out_dir) / f"{name}_{exporter}_op{opset}.onnx"
    x = torch.from_numpy(sample_inputs(shape, 1, seed=0))
    if exporter == "torchscript":
        torch.onnx.export(model, (x,), str(path), opset_version=opset, dynamo=False,
                          input_names=["input"], output_names=["output"])
    else:
        prog = torch.onnx.export(model, (x,), dynamo=True, opset_version=opset, verbose=False)
        prog.save(str(path))
    return path
