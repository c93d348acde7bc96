"""The real backend: a Llama-architecture model on real tensors, driven by the same policy
objects as the simulator. Importing it loads torch; the simulator's import path never does."""
