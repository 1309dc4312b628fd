"""softhist against torch.histc, side by side in one process.

The suite lives in ``softhist.bench`` so that ``softhist bench`` works from any
install; this script runs it with the same flags:

    python benchmarks/bench_histogram.py            # the full CPU table
    python benchmarks/bench_histogram.py --quick    # a smaller table in well under a minute
"""

import sys

from softhist.bench import main

if __name__ == "__main__":
    sys.exit(main())
