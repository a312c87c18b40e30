"""stub"""

NAME = "R5"
TITLE = "trust: permissions, known_hosts"
DEFAULT_RUNS = 12


def run(w, seed, runs, only=None, repro=""):
    return []
