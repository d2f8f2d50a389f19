"""The usual way to train an MLP on MNIST, as the PyTorch examples write it: a reference for the benchmarks.

datasets.MNIST with ToTensor and Normalize, a shuffling DataLoader, nn.Sequential, loss.backward() and
torch.optim.SGD, then the test set. The network and its recipe (widths, epochs, batch, SGD with Nesterov
momentum and weight decay, label smoothing, a cosine schedule stepped per batch) come from the command
line, so that scripts/bench_time_to_accuracy.py trains the same network as a preset to the same accuracy.
It prints one JSON line: the test accuracy.

    python scripts/canonical_mnist.py --root ROOT --hidden 512,256 --epochs 4 --batch-size 128 --lr 0.2
"""

import argparse
import itertools
import json
import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import datasets, transforms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="a folder with MNIST/raw/ holding the four extracted files")
    parser.add_argument("--hidden", default="512,256")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train_set = datasets.MNIST(args.root, train=True, transform=transform)
    test_set = datasets.MNIST(args.root, train=False, transform=transform)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=1000)

    widths = [784, *(int(width) for width in args.hidden.split(",") if width), 10]
    layers: list[nn.Module] = [nn.Flatten()]
    for index, (inputs, outputs) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(inputs, outputs))
        if index < len(widths) - 2:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=args.lr, momentum=args.momentum, nesterov=True, weight_decay=args.weight_decay
    )
    total = args.epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))

    for _ in range(args.epochs):
        model.train()
        for images, labels in train_loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(images), labels, label_smoothing=args.label_smoothing)
            loss.backward()
            optimizer.step()
            scheduler.step()

    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in test_loader:
            correct += (model(images).argmax(dim=1) == labels).sum().item()
    print(json.dumps({"test_accuracy": correct / len(test_set)}))


if __name__ == "__main__":
    main()
