"""The streaming step of the published-size Spann3R, eager against optimised, in one run.

The same benchmark as ``spatialmem bench`` (its options, its JSON, the regenerated
``docs/performance.md``); see ``spatialmem.bench``.

Examples::

    python benchmarks/bench_step.py                 # quick: minutes on 2 cores
    python benchmarks/bench_step.py --full          # 224 and 512x384, batch 1 and 8, 10k frames
    python benchmarks/bench_step.py --int8 --checkpoint WEIGHTS.pt
"""

from spatialmem.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
