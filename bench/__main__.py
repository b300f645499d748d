"""`python -m bench` is the `bench` command (so `torchrun -m bench run ...` works too)."""

from bench.cli import app

app()
