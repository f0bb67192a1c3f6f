"""Benchmark harness: table specs (data) -> resumable jobs -> long CSV -> leaderboards and figures."""
