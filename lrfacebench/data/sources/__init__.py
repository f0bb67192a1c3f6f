"""Readers for the official layouts of PIPA, DukeMTMC, WIDER FACE, CelebA, Helen, folders and video."""
