"""``python -m spatialmem.training`` (or ``torchrun ... -m spatialmem.training``): see
`spatialmem.training.runner`."""

from spatialmem.training.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
