"""Tensor parallelism across processes: the shard every rank builds, the workers' loop and
the driver's handle on them (torch.distributed for the collectives; local processes or Ray
actors for placing the ranks)."""
