"""Pictures of what a model does (the ``viz`` extra: matplotlib).

    attention.py   attention maps per layer and head (PNG + JSON; also served by /v1/attention)
    positions.py   the sinusoidal positional-encoding matrix and its dot product by distance
    embeddings.py  a 2-D PCA map of a model's token embeddings
"""
