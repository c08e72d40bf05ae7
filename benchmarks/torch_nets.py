"""One SGD step of kdistill's finite ConvNets, written again in PyTorch: the reference column of
``benchmarks/nets_speed.py``.

Runs under the PyTorch environment beside the project (``make torch-env`` builds ``.venv-torch``), never under
the project's own: it imports neither JAX nor kdistill. The networks are those of ``kdistill.nets``
(``src/kdistill/nets/_models.py``) on 28x28x1 images and 10 classes, in PyTorch's NCHW layout, eager mode:

- ``convnet`` (DC's ConvNet): ``depth`` x [Conv3x3 (padding 1) -> GroupNorm(width, width) (instance norm with a
  per-channel affine, eps 1e-5) -> ReLU -> AvgPool2d(2)], then Linear(width * 3 * 3, 10) (28 -> 14 -> 7 -> 3);
  PyTorch's default initialisation;
- ``convnet-kip`` (KIP's ConvNet): Conv3x3 -> ReLU, then ``depth`` x [Conv3x3 -> ReLU -> AvgPool2d(2)], then
  Linear; no normalisation; NTK parameterisation: weights and biases N(0, 1), used as
  ``w_std / sqrt(fan_in) * W`` and ``b_std * b`` (w_std = sqrt(2), b_std = 0.1), scaled before the layer's
  conv or matmul (a pass over the small weight, not over the activations; kdistill scales the layer's output,
  a pass that XLA fuses with the next one).

A step: ``zero_grad``, forward, cross-entropy (mean over the batch), backward and
``torch.optim.SGD(lr=0.01, momentum=0.9, weight_decay=5e-4)``, the same update as nets_speed.py's
``optax.chain(add_decayed_weights(5e-4), sgd(0.01, momentum=0.9))``. float32; random N(0, 1) images and random
labels; ``torch.set_num_threads(os.cpu_count())``.

A network is ``[name, width, batch]`` or ``{"name": ..., "width": ..., "batch": ..., "depth": 3}``.

Usage:
  .venv-torch/bin/python benchmarks/torch_nets.py [--rounds 3] '[["convnet", 128, 256], ["convnet-kip", 256, 256]]'
  echo '[["convnet", 16, 8]]' | .venv-torch/bin/python benchmarks/torch_nets.py
prints one JSON line per network: name, width, depth, batch, params (the number of trainable values), seconds
(the median of ``--rounds`` timed steps after one warm-up step), rounds_s, warmup_s, torch (its version) and
threads.

  .venv-torch/bin/python benchmarks/torch_nets.py --serve '["convnet", 128, 256]'
builds one network, runs the warm-up step and prints that line without the timings; then runs one step for each
line ``step`` read from stdin and prints ``{"seconds": ...}``, until stdin closes. This is how nets_speed.py
interleaves PyTorch's steps with JAX's (the process waits on its stdin while JAX runs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

IMAGE, CHANNELS, CLASSES = 28, 1, 10
NETWORKS = ("convnet", "convnet-kip")
W_STD, B_STD = math.sqrt(2.0), 0.1  # kdistill.nets.ConvNet's NTK scales
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 5e-4


class NTKConv3x3(nn.Module):
    """``w_std / sqrt(9 c_in) * conv3x3(x, W) + b_std * b`` (padding 1), with ``W, b ~ N(0, 1)``."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, 3, 3))
        self.bias = nn.Parameter(torch.randn(c_out))
        self.scale = W_STD / math.sqrt(9 * c_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias * B_STD, padding=1)


class NTKLinear(nn.Module):
    """``w_std / sqrt(d_in) * x @ W + b_std * b``, with ``W, b ~ N(0, 1)``."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_out, d_in))
        self.bias = nn.Parameter(torch.randn(d_out))
        self.scale = W_STD / math.sqrt(d_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias * B_STD)


def build(name: str, width: int, depth: int = 3) -> nn.Module:
    """The network ``name`` (one of :data:`NETWORKS`) for (n, 1, 28, 28) images and 10 classes."""
    side = IMAGE
    if name == "convnet":
        layers: list[nn.Module] = []
        c_in = CHANNELS
        for _ in range(depth):
            layers += [nn.Conv2d(c_in, width, 3, padding=1), nn.GroupNorm(width, width, eps=1e-5, affine=True),
                       nn.ReLU(), nn.AvgPool2d(2)]
            c_in, side = width, side // 2
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(width * side * side, CLASSES))
    if name == "convnet-kip":
        layers = [NTKConv3x3(CHANNELS, width), nn.ReLU()]
        for _ in range(depth):
            layers += [NTKConv3x3(width, width), nn.ReLU(), nn.AvgPool2d(2)]
            side //= 2
        return nn.Sequential(*layers, nn.Flatten(), NTKLinear(width * side * side, CLASSES))
    raise ValueError(f"unknown network {name!r}; valid: {', '.join(NETWORKS)}")


def parse_network(spec) -> dict:
    """``[name, width, batch]`` or ``{"name", "width", "batch"[, "depth"]}`` -> a dict of the four."""
    if isinstance(spec, (list, tuple)) and len(spec) == 3:
        spec = dict(zip(("name", "width", "batch"), spec))
    if not isinstance(spec, dict) or not {"name", "width", "batch"} <= set(spec):
        raise ValueError(f"a network is [name, width, batch] or a dict with those keys, got {spec!r}")
    net = {"name": str(spec["name"]), "width": int(spec["width"]), "depth": int(spec.get("depth", 3)),
           "batch": int(spec["batch"])}
    if net["name"] not in NETWORKS:
        raise ValueError(f"unknown network {net['name']!r}; valid: {', '.join(NETWORKS)}")
    if min(net["width"], net["depth"], net["batch"]) < 1 or IMAGE < 2 ** net["depth"]:
        raise ValueError(f"width, depth and batch must be >= 1 and depth <= {int(math.log2(IMAGE))}, got {spec!r}")
    return net


def make_step(net: dict, seed: int = 0):
    """``(step, info)``: ``step()`` runs one SGD step of ``net`` on a fixed random batch and returns its
    seconds; ``info`` describes the network."""
    torch.manual_seed(seed)
    model = build(net["name"], net["width"], net["depth"])
    x = torch.randn(net["batch"], CHANNELS, IMAGE, IMAGE)
    y = torch.randint(0, CLASSES, (net["batch"],))
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)

    def step() -> float:
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        loss.item()
        return time.perf_counter() - t

    info = {**net, "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    return step, info


def _print(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def serve(net: dict) -> None:
    step, info = make_step(net)
    info["warmup_s"] = step()
    _print(info)
    for line in sys.stdin:
        if line.strip() != "step":
            raise ValueError(f"--serve reads lines 'step', got {line.strip()!r}")
        _print({"seconds": step()})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("networks", nargs="?", help="a JSON list of networks (default: read from stdin)")
    ap.add_argument("--rounds", type=int, default=3, help="timed steps per network, after one warm-up step")
    ap.add_argument("--serve", metavar="NETWORK", help="one network (JSON): a step per stdin line 'step'")
    args = ap.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    if args.serve is not None:
        if args.networks is not None:
            ap.error("--serve takes its one network itself; leave out the network list")
        try:
            spec = parse_network(json.loads(args.serve))
        except ValueError as e:  # json.JSONDecodeError included
            ap.error(str(e))
        serve(spec)
        return
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    text = args.networks if args.networks is not None else sys.stdin.read()
    try:
        specs = json.loads(text)
        if not isinstance(specs, list) or not specs:
            raise ValueError(f"expected a non-empty JSON list of networks, got {text.strip()[:200]!r}")
        nets = [parse_network(s) for s in specs]  # all checked before the first is timed
    except ValueError as e:
        ap.error(str(e))
    for net in nets:
        step, info = make_step(net)
        info["warmup_s"] = step()
        rounds = [step() for _ in range(args.rounds)]
        _print({**info, "seconds": statistics.median(rounds), "rounds_s": rounds})
        del step


if __name__ == "__main__":
    main()
