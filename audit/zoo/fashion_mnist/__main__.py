"""``python -m audit.zoo.fashion_mnist``: retrain the embedded model (see :mod:`audit.zoo.fashion_mnist.train`)."""

from .train import main

if __name__ == "__main__":
    raise SystemExit(main())
