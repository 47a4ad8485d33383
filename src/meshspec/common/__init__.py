"""What every stage and the runtime share: stdlib only, imports nothing else of meshspec's."""
