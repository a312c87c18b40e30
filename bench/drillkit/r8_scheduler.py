"""stub"""

NAME = "R8"
TITLE = "scheduler faults"
DEFAULT_RUNS = 12


def run(w, seed, runs, only=None, repro=""):
    return []
