"""The Transformer from its formulas: attention, positions, layers, stacks and heads."""

from lmlab.model.attention import KVCache, MultiHeadAttention, scaled_dot_product_attention
from lmlab.model.config import TransformerConfig, preset
from lmlab.model.pretrained import load_model, save_model
from lmlab.model.transformer import ModelOutput, Transformer

__all__ = ["KVCache", "ModelOutput", "MultiHeadAttention", "Transformer", "TransformerConfig",
           "load_model", "preset", "save_model", "scaled_dot_product_attention"]
