"""advgrad's --arch grammar as a PyTorch nn.Sequential with the same
indices (so the same state-dict keys): tokens joined by '-'; an optional
first token CxHxW (the input image); cOkK[sS][pP] a Conv2d; mpK / apK max-
and average-pooling with kernel = stride = K; a number a Linear layer (the
first token, without an image, is the input width). A Flatten comes before
the first Linear after an image; the activation follows every conv and
every Linear but the last."""
import re

import torch.nn as nn

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def sequential(arch, act="relu"):
    tokens = arch.split("-")
    image = re.fullmatch(r"(\d+)x(\d+)x(\d+)", tokens[0])
    if image:
        channels, features, rest = int(image.group(1)), None, tokens[1:]
        h, w = int(image.group(2)), int(image.group(3))
    else:
        channels, features, rest = None, int(tokens[0]), tokens[1:]
    layers = []
    for i, tok in enumerate(rest):
        conv = re.fullmatch(r"c(\d+)k(\d+)(?:s(\d+))?(?:p(\d+))?", tok)
        pool = re.fullmatch(r"(mp|ap)(\d+)", tok)
        if conv:
            out, k = int(conv.group(1)), int(conv.group(2))
            s, p = int(conv.group(3) or 1), int(conv.group(4) or 0)
            layers += [nn.Conv2d(channels, out, k, stride=s, padding=p), ACTIVATIONS[act]()]
            channels, h, w = out, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        elif pool:
            k = int(pool.group(2))
            layers.append(nn.MaxPool2d(k) if pool.group(1) == "mp" else nn.AvgPool2d(k))
            h, w = h // k, w // k
        else:
            n = int(tok)
            if features is None:
                layers.append(nn.Flatten())
                features = channels * h * w
            layers.append(nn.Linear(features, n))
            if i < len(rest) - 1:
                layers.append(ACTIVATIONS[act]())
            features = n
    return nn.Sequential(*layers)


def input_shape(arch):
    """The shape one input takes in PyTorch: (C, H, W) or (features,)."""
    first = arch.split("-")[0]
    return tuple(int(d) for d in first.split("x"))
