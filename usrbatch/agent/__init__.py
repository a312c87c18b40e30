"""The agent: the stdlib program that runs beside a dataset (`remote.py`, shipped whole to a remote
`python3` or called in-process for local directories). Standard library only, Python 3.6+."""
