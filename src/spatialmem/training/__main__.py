"""``python -m spatialmem.training`` (or ``torchrun ... -m spatialmem.training``): see
`spatialmem.training.cli`."""

from spatialmem.training.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
