"""stub"""

NAME = "R7"
TITLE = "fuzzed input (hypothesis)"
DEFAULT_RUNS = 200


def run(w, seed, runs, only=None, repro=""):
    return []
