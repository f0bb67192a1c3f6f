"""Network building blocks, discriminators and losses shared by CR and the baselines."""
