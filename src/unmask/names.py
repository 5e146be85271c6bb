"""Names that the command line needs before anything heavy is imported (kept free of torch)."""

CACHE_MODES = ("auto", "none", "prefix", "dual", "committed")  # auto: committed for block-causal models, else none
SEED_LIMIT = 2**63  # seeds are ints in [0, 2^63): GenerationConfig, generate(seeds=...), the CLI and the server
