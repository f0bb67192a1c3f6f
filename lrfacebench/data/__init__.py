"""Dataset building: source readers -> detection -> filters -> sharded store + manifest + card."""
