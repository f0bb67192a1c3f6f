"""Metrics: FID/KID (clean-fid, offline), PSNR/SSIM, rank-1/CMC, complexity."""
