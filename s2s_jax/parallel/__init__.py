"""Device meshes, logical-axis rules, shardings and multi-host setup.

The only package that names mesh axes ("data", "fsdp", "tensor"). Models name their axes
logically ("batch", "embed", "mlp", ...); `rules.LOGICAL_AXIS_RULES` maps those names to mesh
axes, and `sharding` turns them into the `NamedSharding`s that the train step is jitted with.

    mesh.py         MeshConfig (config.parallel) -> jax.sharding.Mesh
    rules.py        the logical-axis rules table
    sharding.py     shardings of the train state and batches; putting host data on the mesh
    collectives.py  data parallelism written with jax.shard_map and explicit collectives
    multihost.py    jax.distributed.initialize from config; which rows a process loads
"""
