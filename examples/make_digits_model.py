#!/usr/bin/env python3
"""Train a tiny CNN on scikit-learn's 8x8 digits in pure numpy and export it to ONNX.

Writes, next to this script (or to --out-dir):
  digits_cnn.onnx      float32, opset 13, input "image" [1,1,8,8] (NCHW, pixels in [0,1]),
                       output "probs" [1,10] (softmax probabilities)
  digits_samples.npz   "inputs": 16 test digits, float32 [16,1,8,8] in [0,1];
                       "labels": their classes, int64 [16]

Architecture (exactly what the ONNX graph contains):
  Conv(1->8, 3x3, pad 1, no bias) -> BatchNormalization -> Relu -> MaxPool 2x2
  -> Conv(8->16, 3x3, pad 1) -> Relu -> GlobalAveragePool -> Flatten
  -> Gemm(16->10, transB=1) -> Softmax

Training: Adam, mini-batches of 32, fixed seed, on the first 1400 digits; the rest
(397 digits) are the test set. BatchNormalization uses batch statistics while
training; the exported mean/var are the exact statistics over the training set,
so BN carries real (non-trivial) parameters for the BN-folding pass.

Needs numpy, onnx and scikit-learn; onnxruntime (optional) cross-checks the export.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

N_TRAIN = 1400
N_SAMPLES = 16
BN_EPS = 1e-5
OPSET = 13
IR_VERSION = 8  # readable by onnxruntime >= 1.17 and onnx >= 1.16


# ----------------------------------------------------------------------------- data


def load_data():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]  # [N,1,8,8] in [0,1]
    y = d.target.astype(np.int64)
    return (x[:N_TRAIN], y[:N_TRAIN]), (x[N_TRAIN:], y[N_TRAIN:])


# ---------------------------------------------------------------- layer primitives


def im2col3x3(x):
    """x [N,C,H,W] -> columns [N*H*W, C*9] for a 3x3 conv, stride 1, pad 1."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.empty((n, c, 3, 3, h, w), dtype=x.dtype)
    for ky in range(3):
        for kx in range(3):
            cols[:, :, ky, kx] = xp[:, :, ky : ky + h, kx : kx + w]
    # -> [N,H,W,C,3,3] so each row matches weight.reshape(Cout, C*9)
    return cols.transpose(0, 4, 5, 1, 2, 3).reshape(n * h * w, c * 9)


def col2im3x3(dcols, shape):
    """Adjoint of im2col3x3: columns gradient [N*H*W, C*9] -> input gradient [N,C,H,W]."""
    n, c, h, w = shape
    d = dcols.reshape(n, h, w, c, 3, 3).transpose(0, 3, 4, 5, 1, 2)
    dxp = np.zeros((n, c, h + 2, w + 2), dtype=dcols.dtype)
    for ky in range(3):
        for kx in range(3):
            dxp[:, :, ky : ky + h, kx : kx + w] += d[:, :, ky, kx]
    return dxp[:, :, 1:-1, 1:-1]


def conv3x3(x, w, b=None):
    """Conv, 3x3, stride 1, pad 1. x [N,C,H,W], w [K,C,3,3] -> ([N,K,H,W], cols)."""
    n, _, h, wd = x.shape
    k = w.shape[0]
    cols = im2col3x3(x)
    out = cols @ w.reshape(k, -1).T
    if b is not None:
        out = out + b
    return out.reshape(n, h, wd, k).transpose(0, 3, 1, 2), cols


def conv3x3_backward(dout, cols, x_shape, w):
    k = w.shape[0]
    d = dout.transpose(0, 2, 3, 1).reshape(-1, k)  # [N*H*W, K]
    dw = (d.T @ cols).reshape(w.shape)
    db = d.sum(axis=0)
    dx = col2im3x3(d @ w.reshape(k, -1), x_shape)
    return dx, dw, db


def maxpool2x2(x):
    n, c, h, w = x.shape
    xr = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
    idx = xr.argmax(axis=-1)
    out = np.take_along_axis(xr, idx[..., None], axis=-1)[..., 0]
    return out, idx


def maxpool2x2_backward(dout, idx, x_shape):
    n, c, h, w = x_shape
    d = np.zeros((n, c, h // 2, w // 2, 4), dtype=dout.dtype)
    np.put_along_axis(d, idx[..., None], dout[..., None], axis=-1)
    return d.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(x_shape)


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------------ the model


def init_params(rng):
    def he(shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    return {
        "conv1.weight": he((8, 1, 3, 3), 9),
        "bn1.scale": np.ones(8, np.float32),
        "bn1.bias": np.zeros(8, np.float32),
        "conv2.weight": he((16, 8, 3, 3), 72),
        "conv2.bias": np.zeros(16, np.float32),
        "fc.weight": he((10, 16), 16),  # Gemm B with transB=1: [out, in]
        "fc.bias": np.zeros(10, np.float32),
    }


def forward_train(p, x):
    """Training-mode forward (BN on batch statistics). Returns logits and a cache."""
    z1, cols1 = conv3x3(x, p["conv1.weight"])
    mu = z1.mean(axis=(0, 2, 3), keepdims=True)
    var = z1.var(axis=(0, 2, 3), keepdims=True)
    inv = 1.0 / np.sqrt(var + BN_EPS)
    xhat = (z1 - mu) * inv
    bn = xhat * p["bn1.scale"][None, :, None, None] + p["bn1.bias"][None, :, None, None]
    r1 = np.maximum(bn, 0)
    m1, pidx = maxpool2x2(r1)
    z2, cols2 = conv3x3(m1, p["conv2.weight"], p["conv2.bias"])
    r2 = np.maximum(z2, 0)
    g = r2.mean(axis=(2, 3))  # GlobalAveragePool + Flatten -> [N,16]
    logits = g @ p["fc.weight"].T + p["fc.bias"]
    cache = (x, cols1, xhat, inv, bn, r1, pidx, m1, cols2, z2, r2, g)
    return logits, cache


def backward(p, cache, dlogits):
    x, cols1, xhat, inv, bn, r1, pidx, m1, cols2, z2, r2, g = cache
    grads = {}
    grads["fc.weight"] = dlogits.T @ g
    grads["fc.bias"] = dlogits.sum(axis=0)
    dg = dlogits @ p["fc.weight"]
    hw = r2.shape[2] * r2.shape[3]
    dr2 = np.broadcast_to(dg[:, :, None, None] / hw, r2.shape)
    dz2 = dr2 * (z2 > 0)
    dm1, grads["conv2.weight"], grads["conv2.bias"] = conv3x3_backward(dz2, cols2, m1.shape, p["conv2.weight"])
    dr1 = maxpool2x2_backward(dm1, pidx, r1.shape)
    dbn = dr1 * (bn > 0)
    grads["bn1.scale"] = (dbn * xhat).sum(axis=(0, 2, 3))
    grads["bn1.bias"] = dbn.sum(axis=(0, 2, 3))
    dxhat = dbn * p["bn1.scale"][None, :, None, None]
    m = dxhat.shape[0] * dxhat.shape[2] * dxhat.shape[3]
    dz1 = (inv / m) * (
        m * dxhat - dxhat.sum(axis=(0, 2, 3), keepdims=True) - xhat * (dxhat * xhat).sum(axis=(0, 2, 3), keepdims=True)
    )
    _, grads["conv1.weight"], _ = conv3x3_backward(dz1, cols1, x.shape, p["conv1.weight"])
    return grads


def forward_infer(p, x):
    """Inference forward, exactly the ONNX graph (BN with stored mean/var). Returns probs."""
    z1, _ = conv3x3(x, p["conv1.weight"])
    c = (None, slice(None), None, None)
    bn = (z1 - p["bn1.mean"][c]) / np.sqrt(p["bn1.var"][c] + np.float32(BN_EPS)) * p["bn1.scale"][c] + p["bn1.bias"][c]
    m1, _ = maxpool2x2(np.maximum(bn, 0))
    z2, _ = conv3x3(m1, p["conv2.weight"], p["conv2.bias"])
    g = np.maximum(z2, 0).mean(axis=(2, 3))
    return softmax(g @ p["fc.weight"].T + p["fc.bias"])


def train(x, y, *, epochs, seed, batch=32, lr=0.01):
    rng = np.random.default_rng(seed)
    p = init_params(rng)
    adam_m = {k: np.zeros_like(v) for k, v in p.items()}
    adam_v = {k: np.zeros_like(v) for k, v in p.items()}
    b1, b2, eps = 0.9, 0.999, 1e-8
    step = 0
    onehot = np.eye(10, dtype=np.float32)[y]
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        loss_sum = 0.0
        correct = 0
        for s in range(0, len(x), batch):
            idx = order[s : s + batch]
            logits, cache = forward_train(p, x[idx])
            probs = softmax(logits)
            loss_sum += -np.log(probs[np.arange(len(idx)), y[idx]] + 1e-12).sum()
            correct += (probs.argmax(1) == y[idx]).sum()
            dlogits = (probs - onehot[idx]) / len(idx)
            grads = backward(p, cache, dlogits)
            step += 1
            lr_t = lr * (0.5 * (1 + np.cos(np.pi * epoch / epochs)))  # cosine decay per epoch
            for k in p:
                adam_m[k] = b1 * adam_m[k] + (1 - b1) * grads[k]
                adam_v[k] = b2 * adam_v[k] + (1 - b2) * grads[k] ** 2
                mhat = adam_m[k] / (1 - b1**step)
                vhat = adam_v[k] / (1 - b2**step)
                p[k] = (p[k] - lr_t * mhat / (np.sqrt(vhat) + eps)).astype(np.float32)
        if epoch % 5 == 4 or epoch == epochs - 1:
            print(f"epoch {epoch + 1:3d}  loss {loss_sum / len(x):.4f}  train acc {correct / len(x):.4f}")

    # BN statistics for inference: exact population mean/var of conv1's output on the training set.
    z1, _ = conv3x3(x, p["conv1.weight"])
    p["bn1.mean"] = z1.mean(axis=(0, 2, 3)).astype(np.float32)
    p["bn1.var"] = z1.var(axis=(0, 2, 3)).astype(np.float32)
    return {k: v.astype(np.float32) for k, v in p.items()}


# ---------------------------------------------------------------------- ONNX export


def to_onnx(p) -> onnx.ModelProto:
    init = [numpy_helper.from_array(p[k], name=k) for k in (
        "conv1.weight", "bn1.scale", "bn1.bias", "bn1.mean", "bn1.var",
        "conv2.weight", "conv2.bias", "fc.weight", "fc.bias",
    )]  # fmt: skip
    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [1, 1]}
    nodes = [
        helper.make_node("Conv", ["image", "conv1.weight"], ["conv1_out"], name="conv1", **conv),
        helper.make_node(
            "BatchNormalization",
            ["conv1_out", "bn1.scale", "bn1.bias", "bn1.mean", "bn1.var"],
            ["bn1_out"],
            name="bn1",
            epsilon=BN_EPS,
        ),
        helper.make_node("Relu", ["bn1_out"], ["relu1_out"], name="relu1"),
        helper.make_node("MaxPool", ["relu1_out"], ["pool1_out"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["pool1_out", "conv2.weight", "conv2.bias"], ["conv2_out"], name="conv2", **conv),
        helper.make_node("Relu", ["conv2_out"], ["relu2_out"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["relu2_out"], ["gap_out"], name="gap"),
        helper.make_node("Flatten", ["gap_out"], ["flat_out"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat_out", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 10])],
        initializer=init,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="tinyc-examples",
        doc_string="8x8 digits CNN trained with examples/make_digits_model.py",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def check_with_onnxruntime(path: Path, p, x) -> float | None:
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime not installed: skipping the cross-check")
        return None
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = forward_infer(p, x)
    got = np.concatenate([sess.run(["probs"], {"image": x[i : i + 1]})[0] for i in range(len(x))])
    diff = float(np.abs(got - ref).max())
    print(f"onnxruntime vs numpy forward on {len(x)} digits: max abs diff {diff:.3g}")
    if diff >= 1e-5:
        raise SystemExit(f"error: onnxruntime and the numpy forward disagree (max abs diff {diff:.3g})")
    return diff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    t0 = time.time()
    (xtr, ytr), (xte, yte) = load_data()
    params = train(xtr, ytr, epochs=args.epochs, seed=args.seed)
    acc = float((forward_infer(params, xte).argmax(1) == yte).mean())
    print(f"test accuracy: {acc:.4f} on {len(xte)} digits (trained on {len(xtr)})")
    print("bn1 mean", np.round(params["bn1.mean"], 3), "var", np.round(params["bn1.var"], 3))

    args.out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out_dir / "digits_cnn.onnx"
    onnx.save(to_onnx(params), str(onnx_path))
    np.savez(args.out_dir / "digits_samples.npz", inputs=xte[:N_SAMPLES].astype(np.float32), labels=yte[:N_SAMPLES])
    onnx.checker.check_model(str(onnx_path), full_check=True)
    check_with_onnxruntime(onnx_path, params, xte)
    print(f"wrote {onnx_path} and {args.out_dir / 'digits_samples.npz'} in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
