"""Shared test settings."""

import torch

# Tests train tiny models: on 2 cores one thread is faster than two fighting over them.
torch.set_num_threads(1)
