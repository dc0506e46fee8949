"""A no-op python step for the benchmarks."""


def run(ctx):
    return None
