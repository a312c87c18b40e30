"""stub"""

NAME = "R4"
TITLE = "hostile remote"
DEFAULT_RUNS = 30


def run(w, seed, runs, only=None, repro=""):
    return []
