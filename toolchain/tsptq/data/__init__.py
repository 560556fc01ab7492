"""Labelled image sets: the bundled sample, CIFAR-10, Fashion-MNIST, ImageNet folders, with each model's preprocessing."""
