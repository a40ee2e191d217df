"""The embedded Fashion-MNIST ViT: its shipped files, and the script that rebuilds them.

This folder holds the weights (``vit_fmnist.safetensors``), the model card (``MODEL_CARD.md``) and the sample
images (``images/``) that :mod:`audit.zoo` locates. ``python -m audit.zoo.fashion_mnist --out DIR`` retrains the
model from the Fashion-MNIST idx files (see :mod:`audit.zoo.fashion_mnist.train`).
"""
