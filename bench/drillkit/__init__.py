"""The reliability drills of bench/drills.py: the world they run in, the verdict, one module per drill."""
