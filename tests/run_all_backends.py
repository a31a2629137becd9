"""Runs the test suite and the docstring examples once per Keras backend (jax, tensorflow, torch); exits non-zero if any fails.

python tests/run_all_backends.py [extra pytest args]
"""

import os
import subprocess
import sys
import time

BACKENDS = ("jax", "tensorflow", "torch")


def main(extra_args):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    results = []
    for backend in BACKENDS:
        print(f"\n===== KERAS_BACKEND={backend} =====", flush=True)
        start = time.time()
        env = dict(os.environ, KERAS_BACKEND=backend)
        code = subprocess.call(
            # --durations: the slowest tests of each backend, where CI time goes
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "--durations=15",
                "--doctest-modules",
                "keras_ldm",
                "tests",
                *extra_args,
            ],
            cwd=root,
            env=env,
        )
        results.append((backend, code, time.time() - start))
    print("\nbackend     result  seconds")
    for backend, code, seconds in results:
        print(f"{backend:<11} {'ok' if code == 0 else 'FAILED':<7} {seconds:7.0f}")
    return max(code for _, code, _ in results)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
