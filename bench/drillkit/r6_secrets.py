"""stub"""

NAME = "R6"
TITLE = "secrets by key and value"
DEFAULT_RUNS = 12


def run(w, seed, runs, only=None, repro=""):
    return []
